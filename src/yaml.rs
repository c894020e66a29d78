//! YAML subset reader (placeholder until the reader lands).
