//! rigbox-testkit
