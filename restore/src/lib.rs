//! # voltool-restore
//!
//! ## Overview
//! Safe extraction, staged restore with an atomic swap, verification and restore tests in an
//! isolated container.
//!
//! ## Status
//! Not built yet (issue 5). The crate exists so the workspace layout is final; it exports
//! nothing.
