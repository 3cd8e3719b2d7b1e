//! # voltool-migrate
//!
//! ## Overview
//! Moving a volume between hosts: the ssh transport and the `voltool receive` side.
//!
//! ## Status
//! Not built yet (issue 5). The crate exists so the workspace layout is final; it exports
//! nothing.
