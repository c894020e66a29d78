//! Secret masking (placeholder until the masker lands).
