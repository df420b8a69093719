//! avmon-store
