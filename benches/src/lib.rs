//! nereid-bench
