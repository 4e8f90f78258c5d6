//! Plain aligned tables for human output.

/// Left-aligned columns separated by two spaces; numeric-looking cells right-aligned.
pub(crate) fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let numeric = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'%' | b'/'))
    };
    let mut out = String::new();
    let mut line = |cells: Vec<&str>, header: bool| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                l.push_str("  ");
            }
            if !header && numeric(c) {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
            } else {
                l.push_str(c);
                if i + 1 < cells.len() {
                    l.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), true);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), false);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns() {
        let t = super::render(
            &["NAME", "N"],
            &[
                vec!["a".into(), "100".into()],
                vec!["long".into(), "2".into()],
            ],
        );
        assert_eq!(t, "NAME  N\na     100\nlong    2\n");
    }
}
