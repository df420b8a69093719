//! avmon-server
