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
    /// The chroma planes (Cb, then Cr), 8 bits per sample, each subsampled as the picture's
    /// format says (half the width and height in 4:2:0), when the decoder gives planar 8-bit
    /// YUV; `None` otherwise (semi-planar or packed formats, grey, deeper samples).
    pub chroma: Option<[Plane<'a>; 2]>,
    /// True when luma uses the full 0–255 range (JPEG range), false for limited 16–235.
    pub full_range: bool,
    /// True for a keyframe.
    pub key: bool,
    /// True when the decoder flagged the frame as corrupt or reported an error decoding it.
    pub corrupt: bool,
    /// The decoder's own error flags for this frame (FFmpeg's `decode_error_flags`, see
    /// [`decode_error`]); 0 when it decoded cleanly.
    pub decode_errors: u32,
    /// Below [`crate::Tier::Full`], when the input knows: whether the picture may have changed
    /// between the previous decoded frame and this one, judged from the sizes of the packets
    /// not decoded in between (in the `keyframes` tier: their largest is more than twice their
    /// mean, as a flash or a cut between two alike keyframes shows, where a still picture codes
    /// to packets all alike). `None` when every frame is decoded, or it is not known.
    pub changed_between: Option<bool>,
    /// The closed captions the picture carries (CEA-708 `cc_data` triplets: ATSC A/53 user data
    /// in H.264/HEVC SEI or MPEG-2 user data, as FFmpeg's decoders export it); `None` when it
    /// carries none.
    pub captions: Option<&'a [u8]>,
}

/// Bits of [`VideoFrame::decode_errors`], as FFmpeg's decoders set them.
pub mod decode_error {
    /// The bitstream was invalid.
    pub const INVALID_BITSTREAM: u32 = 1;
    /// A reference picture was missing.
    pub const MISSING_REFERENCE: u32 = 2;
    /// Error concealment filled in damaged macroblocks.
    pub const CONCEALMENT_ACTIVE: u32 = 4;
    /// Some slices could not be decoded.
    pub const DECODE_SLICES: u32 = 8;
    /// avmon's own bit (FFmpeg uses the low bits only): the demuxer flagged a packet of this frame
    /// as corrupt (a continuity-counter gap: transport packets were lost), or such a packet's own
    /// frame never came out of the decoder and this is the first frame shown after it.
    pub const CORRUPT_PACKET: u32 = 1 << 16;
}

/// Bits of [`AudioBuffer::layout`]: the speaker of each channel, as FFmpeg's `AV_CH_*` masks.
/// Channels appear in the buffer in increasing bit order.
pub mod speaker {
    pub const FRONT_LEFT: u64 = 0x1;
    pub const FRONT_RIGHT: u64 = 0x2;
    pub const FRONT_CENTER: u64 = 0x4;
    pub const LOW_FREQUENCY: u64 = 0x8;
    pub const BACK_LEFT: u64 = 0x10;
    pub const BACK_RIGHT: u64 = 0x20;
    pub const FRONT_LEFT_OF_CENTER: u64 = 0x40;
    pub const FRONT_RIGHT_OF_CENTER: u64 = 0x80;
    pub const BACK_CENTER: u64 = 0x100;
    pub const SIDE_LEFT: u64 = 0x200;
    pub const SIDE_RIGHT: u64 = 0x400;
    pub const LOW_FREQUENCY_2: u64 = 0x8_0000_0000;
    /// Mono.
    pub const MONO: u64 = FRONT_CENTER;
    /// Stereo.
    pub const STEREO: u64 = FRONT_LEFT | FRONT_RIGHT;
    /// 5.1 with side surrounds (FFmpeg's `5.1(side)`, AAC's usual 5.1).
    pub const SURROUND_5_1_SIDE: u64 =
        FRONT_LEFT | FRONT_RIGHT | FRONT_CENTER | LOW_FREQUENCY | SIDE_LEFT | SIDE_RIGHT;
    /// 5.1 with back surrounds (FFmpeg's `5.1`).
    pub const SURROUND_5_1: u64 =
        FRONT_LEFT | FRONT_RIGHT | FRONT_CENTER | LOW_FREQUENCY | BACK_LEFT | BACK_RIGHT;

    /// The speaker bit of each channel of `layout`, in channel order; `None` when the layout does
    /// not name exactly `channels` speakers (unknown or custom order).
    pub fn of_channels(layout: u64, channels: usize) -> Option<impl Iterator<Item = u64>> {
        (layout.count_ones() as usize == channels).then(|| {
            (0..64)
                .map(|b| 1u64 << b)
                .filter(move |bit| layout & bit != 0)
        })
    }
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
    /// The speakers of the channels (bits of [`speaker`]); 0 when unknown.
    pub layout: u64,
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
            layout: speaker::STEREO,
        };
        assert_eq!(b.channels(), 2);
        assert!((b.duration() - 0.01).abs() < 1e-12);
    }

    #[test]
    fn speakers_of_a_layout_in_channel_order() {
        let s: Vec<u64> = speaker::of_channels(speaker::SURROUND_5_1_SIDE, 6)
            .unwrap()
            .collect();
        assert_eq!(
            s,
            [
                speaker::FRONT_LEFT,
                speaker::FRONT_RIGHT,
                speaker::FRONT_CENTER,
                speaker::LOW_FREQUENCY,
                speaker::SIDE_LEFT,
                speaker::SIDE_RIGHT
            ]
        );
        assert!(speaker::of_channels(speaker::STEREO, 6).is_none());
        assert!(speaker::of_channels(0, 1).is_none());
    }
}
