//! Borrowed views of decoded media.
//!
//! A [`VideoFrame`] points into the decoder's own picture buffer and an [`AudioBuffer`] into its
//! sample planes. They live only for the duration of one detector call: detectors look at the data
//! in place and keep whatever summary they need (a reference frame for freeze detection, say) in
//! their own preallocated state.

/// One plane of 8-bit samples, with its stride (bytes from one row to the next, may exceed `width`).
#[derive(Clone, Copy, Debug)]
pub struct Plane<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub width: usize,
    pub height: usize,
}

impl<'a> Plane<'a> {
    /// A plane over `data`; `None` when `data` is too short for `stride × height`.
    pub fn new(data: &'a [u8], stride: usize, width: usize, height: usize) -> Option<Self> {
        let needed = if height == 0 {
            0
        } else {
            stride * (height - 1) + width
        };
        (width <= stride && data.len() >= needed).then_some(Plane {
            data,
            stride,
            width,
            height,
        })
    }

    /// Row `y`, exactly `width` samples long.
    #[inline]
    pub fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.data[start..start + self.width]
    }
}

/// A decoded video frame, borrowed from the decoder.
#[derive(Clone, Copy, Debug)]
pub struct VideoFrame<'a> {
    /// Media time of the frame's presentation, seconds from the input's first timestamp.
    pub t: f64,
    /// Nominal duration of the frame (1 / frame rate), seconds.
    pub duration: f64,
    /// The luma (Y) plane, 8 bits per sample.
    pub luma: Plane<'a>,
    /// True when luma uses the full 0–255 range (JPEG range), false for limited 16–235.
    pub full_range: bool,
    /// True for a keyframe.
    pub key: bool,
    /// True when the decoder flagged the frame as corrupt or reported an error decoding it.
    pub corrupt: bool,
}

/// The most audio channels a buffer carries (a 22.2 layout has 24).
pub const MAX_AUDIO_CHANNELS: usize = 32;

/// A decoded buffer of planar float audio, borrowed from the decoder (or from the resampler, when
/// the decoder's own format is not planar float).
#[derive(Clone, Copy, Debug)]
pub struct AudioBuffer<'a> {
    /// Media time of the first sample, seconds from the input's first timestamp.
    pub t: f64,
    pub sample_rate: u32,
    /// One slice per channel, all the same length, samples nominally in −1.0..=1.0.
    pub planes: &'a [&'a [f32]],
}

impl AudioBuffer<'_> {
    /// Samples per channel.
    pub fn samples(&self) -> usize {
        self.planes.first().map_or(0, |p| p.len())
    }

    pub fn channels(&self) -> usize {
        self.planes.len()
    }

    /// Duration of the buffer in seconds.
    pub fn duration(&self) -> f64 {
        if self.sample_rate == 0 {
            0.0
        } else {
            self.samples() as f64 / self.sample_rate as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plane_rejects_short_buffers_and_reads_rows() {
        let data = vec![1u8; 10 * 3];
        assert!(
            Plane::new(&data, 10, 11, 3).is_none(),
            "width beyond stride"
        );
        assert!(Plane::new(&data[..25], 10, 8, 3).is_none(), "too short");
        let p = Plane::new(&data[..28], 10, 8, 3).expect("last row may be short of stride");
        assert_eq!(p.row(2).len(), 8);
    }

    #[test]
    fn audio_buffer_duration() {
        let l = [0.0f32; 480];
        let r = [0.0f32; 480];
        let planes: [&[f32]; 2] = [&l, &r];
        let b = AudioBuffer {
            t: 1.0,
            sample_rate: 48_000,
            planes: &planes,
        };
        assert_eq!(b.channels(), 2);
        assert!((b.duration() - 0.01).abs() < 1e-12);
    }
}
