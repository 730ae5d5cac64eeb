//! The tour's voice: a chapter heading, plain lines, and key/value details.

use std::fmt::Display;

/// Starts a chapter.
pub(crate) fn chapter(number: usize, title: &str) {
    println!();
    println!(
        "── {number}. {title} {}",
        "─".repeat(60usize.saturating_sub(title.len()))
    );
}

/// One line of narrative.
pub(crate) fn line(text: impl Display) {
    println!("   {text}");
}

/// An indented `key: value` detail under a line.
pub(crate) fn detail(key: &str, value: impl Display) {
    println!("     {key:<22} {value}");
}
