//! Fixed-width text layout for the paper: wrapping and right-aligned columns.
//! All inputs have been through `charset::printable`, so one `char` is one
//! column.

/// Columns of font A on 80 mm paper (576 dots / 12).
pub(crate) const WIDTH: usize = 48;

/// Splits `text` into lines of at most `width` columns, at spaces where it
/// can and mid-word where a word alone is too long. Never returns no lines.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word: Vec<char> = word.chars().collect();
        let line_len = line.chars().count();
        if line_len > 0 && line_len + 1 + word.len() <= width {
            line.push(' ');
            line.extend(word.iter());
            continue;
        }
        if line_len > 0 {
            lines.push(std::mem::take(&mut line));
        }
        while word.len() > width {
            let rest = word.split_off(width);
            lines.push(word.into_iter().collect());
            word = rest;
        }
        line = word.into_iter().collect();
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// `left` flush left and `right` flush right on one line of `width`; when both
/// do not fit, `left` wraps and `right` gets a line of its own, so nothing is
/// ever cut off.
pub(crate) fn row(left: &str, right: &str, width: usize) -> Vec<String> {
    let right_len = right.chars().count();
    let left_len = left.chars().count();
    if left_len + 1 + right_len <= width {
        let gap = width - left_len - right_len;
        return vec![format!("{left}{}{right}", " ".repeat(gap))];
    }
    let mut lines = wrap(left, width);
    lines.push(format!("{right:>width$}"));
    lines
}

/// A table line: `label` in the first `label_width` columns, then each cell
/// right-aligned in `cell_width` columns. A label too long for its column
/// gets lines of its own above the figures.
pub(crate) fn table_row(
    label: &str,
    cells: &[&str],
    label_width: usize,
    cell_width: usize,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut first = label.to_string();
    if label.chars().count() > label_width {
        lines.extend(wrap(label, label_width + cells.len() * cell_width));
        first.clear();
    }
    let mut line = format!("{first:<label_width$}");
    for cell in cells {
        line.push_str(&format!("{cell:>cell_width$}"));
    }
    lines.push(line);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_and_inside_long_words() {
        assert_eq!(wrap("one two three", 7), ["one two", "three"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("Musée des Tessères", 24), ["Musée des Tessères"]);
    }

    #[test]
    fn row_pads_to_the_width_or_splits() {
        let line = &row("Adult", "24.00", WIDTH)[0];
        assert_eq!(line.chars().count(), WIDTH);
        assert!(line.starts_with("Adult ") && line.ends_with(" 24.00"));
        let long = row(&"x".repeat(45), "1234.00", WIDTH);
        assert_eq!(long.len(), 2);
        assert!(long[1].ends_with("1234.00") && long[1].chars().count() == WIDTH);
    }

    #[test]
    fn table_rows_align_cells() {
        assert_eq!(
            table_row("VAT 5.5 %", &["34.12", "1.88"], 8, 6),
            ["VAT 5.5 %", "         34.12  1.88"]
        );
        assert_eq!(
            table_row("VAT", &["1.00", "2.00"], 8, 6),
            ["VAT       1.00  2.00"]
        );
    }
}
