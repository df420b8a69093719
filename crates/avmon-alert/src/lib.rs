//! avmon-alert
