//! The end-to-end tests, in one binary.

mod pid1;
