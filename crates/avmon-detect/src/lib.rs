//! avmon-detect
