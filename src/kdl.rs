//! KDL v2 parser (placeholder until the parser lands).
