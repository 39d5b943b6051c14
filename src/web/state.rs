//! The web UI's shared state (browser sessions, the avatar cache), held by
//! [`crate::app::AppState`]. It sits below the page handlers and imports none of them.

use std::sync::Arc;

use super::{avatars, session};

/// Web state shared by all requests.
pub struct Web {
    pub sessions: session::Sessions,
    pub avatars: avatars::Avatars,
}

impl Web {
    pub fn new(store: Arc<crate::registry::store::MetaStore>) -> Web {
        Web {
            sessions: session::Sessions::new(store),
            avatars: avatars::Avatars::default(),
        }
    }
}
