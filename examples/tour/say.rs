//! The tour's voice: a chapter heading, plain lines, and key/value details.

use std::fmt::Display;

/// Starts a chapter.
pub(crate) fn chapter(number: usize, title: &str) {
    println!();
    // Every heading ruled to one width, long titles too.
    let rule = 80usize.saturating_sub(title.chars().count() + 7).max(3);
    println!("── {number}. {title} {}", "─".repeat(rule));
}

/// One line of narrative.
pub(crate) fn line(text: impl Display) {
    println!("   {text}");
}

/// An indented `key: value` detail under a line.
pub(crate) fn detail(key: &str, value: impl Display) {
    println!("     {key:<22} {value}");
}
