//! Time of `video.corruption`'s colour check ([`avmon_detect::chroma::ColourDamage::judge`]: the
//! edges and their state) on one picture, against the time of its luma picture score, on a raw
//! I420 picture:
//!
//!     cargo run --release -p avmon-detect --example chroma_cost -- PICTURE.yuv WIDTH HEIGHT
//!
//! Make the picture with `ffmpeg -i IN -frames:v 1 -f rawvideo -pix_fmt yuv420p PICTURE.yuv`.
use std::time::Instant;

use avmon_core::Plane;
use avmon_detect::chroma::ColourDamage;
use avmon_detect::corruption::measure;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, w, h] = &args[..] else {
        eprintln!("usage: chroma_cost PICTURE.yuv WIDTH HEIGHT");
        std::process::exit(2);
    };
    let (w, h): (usize, usize) = (w.parse().expect("a width"), h.parse().expect("a height"));
    let data = std::fs::read(path).expect("the picture");
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    assert!(
        data.len() >= w * h + 2 * cw * ch,
        "the file is shorter than one I420 picture"
    );
    let luma = Plane::new(&data[..w * h], w, w, h).expect("the luma");
    let cb = Plane::new(&data[w * h..w * h + cw * ch], cw, cw, ch).expect("Cb");
    let cr = Plane::new(&data[w * h + cw * ch..], cw, cw, ch).expect("Cr");
    let mut colour = ColourDamage::default();
    let mut t = 0.0;
    let runs = 2000;
    let time = |f: &mut dyn FnMut() -> f64| {
        let mut best = f64::MAX;
        let mut keep = 0.0;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..runs {
                keep += f();
            }
            best = best.min(t.elapsed().as_secs_f64() / runs as f64);
        }
        (best, keep)
    };
    let (check, n) = time(&mut || {
        t += 0.04;
        colour.judge(t, &luma, &[cb, cr]).edges.broken as f64
    });
    let (score, _) = time(&mut || measure(&luma).band);
    println!(
        "{w}x{h}: colour check {:.1} us ({} broken edges), luma picture score {:.1} us",
        check * 1e6,
        n / (5 * runs) as f64,
        score * 1e6
    );
}
