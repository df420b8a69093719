//! avmon-notify
