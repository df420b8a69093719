//! avmon-media
