//! What the picture-damage model costs per picture, in parts: `track` (every picture the model
//! does not look at), `measure` and `score` (every picture it looks at). The cost does not depend
//! on the content: every cell is measured and scored alike.
//!
//!     cargo run --release -p avmon-detect --example damage_model_cost [ROUNDS]
//!
//! bench/learn/cost.py sets these beside FFmpeg's decode of the same sizes.

use std::time::Instant;

use avmon_core::Plane;
use avmon_detect::damage_model::{CellFeatures, DamageModel};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    println!("size,track_ms,measure_ms,score_ms");
    for (w, h) in [(1280usize, 720usize), (1920, 1080)] {
        let data: Vec<u8> = (0..w * h)
            .map(|i| ((i * 7 + i / w * 3) % 251) as u8)
            .collect();
        let p = Plane::new(&data, w, w, h).expect("a plane");
        let mut f = CellFeatures::default();
        let mut m = DamageModel::default();
        f.measure(&p);
        m.score(&f).expect("a score");
        let time = |run: &mut dyn FnMut()| {
            let t = Instant::now();
            for _ in 0..rounds {
                run();
            }
            t.elapsed().as_secs_f64() * 1e3 / rounds as f64
        };
        let track = time(&mut || f.track(&p));
        let measure = time(&mut || f.measure(&p));
        let score = time(&mut || {
            m.score(&f);
        });
        println!("{w}x{h},{track:.4},{measure:.4},{score:.4}");
    }
}
