//! Integration tests: every binary run as a user runs it, with assert_cmd, in a temporary
//! directory, with a cleared environment. One module per tool.

mod common;
