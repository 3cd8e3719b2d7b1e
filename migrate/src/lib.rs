//! # voltool-migrate
//!
//! ## Overview
//! Moving a volume between hosts (SPEC §4). `voltool migrate VOL [USER@]HOST[:NEW]` runs the
//! system `ssh` and starts `voltool receive NEW` on the remote; both CLIs only pipe bytes
//! between their daemon and ssh. This crate holds what both ends agree on:
//!
//! 1. **Handshake** (one JSON line each way, before any data): the sender's [`Offer`] (volume
//!    name, options without secrets, the secret names the volume needs); the receiver answers
//!    with a [`Reply`] `ready` or an error (a missing secret, an existing volume with data),
//!    so nothing moves when the remote cannot take the volume.
//! 2. **Frames** ([`FrameWriter`], [`FrameReader`]): the sender's daemon writes the volume's
//!    zstd tar as `D` frames and, after the last byte, the manifest (every file's sha256) as
//!    a [`Trailer`]: a `Z` frame (the JSON, zstd-compressed: a 100,000-file manifest is
//!    ~28 MB of JSON, 3% of the wire otherwise) or, from protocol 1 senders, an `M` frame (the
//!    JSON as is); or an `E` frame with the reason if archiving failed. The receiving daemon
//!    extracts the `D` stream into staging, reads the manifest, checks every file against it
//!    and only then swaps the data in; a stream that ends without its `M` frame (ssh cut,
//!    sender killed) is an error and the half-received volume is removed.
//! 3. **Result** (one JSON line back): the receiver's [`Reply`] with what it verified; the
//!    sender reports success only on `ok`.
//!
//! Frame: one type byte, a 4-byte big-endian length, the payload. Data frames hold at most
//! [`MAX_FRAME`] bytes.
//!
//! The ssh transport of the sending side is [`ssh`]: it runs the system `ssh` with
//! `voltool receive` on the remote, and speaks the handshake and the verdict over it.
//!
//! Layout: [`Offer`] and [`Reply`] in `offer.rs`, the manifest [`Trailer`] in `trailer.rs`, the
//! frames in `frame.rs`, the ssh transport in `ssh.rs`.
//!
//! ## Boundaries
//! Owns the stream both ends agree on and the ssh transport. It must not know volumes,
//! archives or the daemon's API: the sender's and receiver's daemons produce and consume the
//! frames; this crate only frames, checks and carries them.
//!
//! ## Limitations
//! The transport is the system `ssh`: host keys, authentication and connection options are
//! ssh's (its configuration, `--ssh-option`). A stream cut mid-way is not resumed: the
//! receiver removes what it got and the migration starts over.

mod frame;
mod offer;
#[cfg(feature = "ssh")]
pub mod ssh;
mod trailer;

pub use frame::{FrameError, FrameReader, FrameWriter};
pub use offer::{Offer, Reply};
pub use trailer::Trailer;

/// The protocol version in [`Offer`]. 2: the manifest travels compressed (`Z` frame).
pub const PROTOCOL: u32 = 2;
/// The oldest sender protocol a receiver of this version still reads (1: `M` frames).
pub const OLDEST_PROTOCOL: u32 = 1;
/// The largest manifest a receiver takes (its frame payload, and decompressed).
pub const MAX_MANIFEST: usize = 1 << 30;
/// The largest payload of one frame.
pub const MAX_FRAME: usize = 1 << 20;
