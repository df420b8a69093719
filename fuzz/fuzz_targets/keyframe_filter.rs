//! Arbitrary bytes through the `keyframes` tier's filter (avmon-media's `keyfilter`), which
//! rewrites the transport stream before FFmpeg's demuxer sees it. The invariants are asserted
//! inside `avmon_media::fuzz_keyframe_filter` (built with `--cfg fuzzing`): other PIDs and
//! damaged packets untouched, positions kept, a blanked packet a null packet with its bytes as
//! they were, only counters and PES lengths changed otherwise, and the blanked pictures' index
//! ordered and bounded.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    avmon_media::fuzz_keyframe_filter(data);
});
