//! rigbox-node
