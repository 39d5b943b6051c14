//! The `com.atproto.sync.subscribeRepos` consumer (not written yet: next commit).
