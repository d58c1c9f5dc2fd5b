//! REST control plane adapter (issue 4): axum routes over a backend trait.
