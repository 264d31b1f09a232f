//! (printer: being written)
