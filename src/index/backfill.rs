//! Backfill from PDS hosts (not written yet: next commit).
