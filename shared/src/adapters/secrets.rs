//! Pepper from env or Secrets Manager (being written).
