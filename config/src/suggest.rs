//! "Did you mean …?" suggestions for misspelt keys, values and unit names.

/// Edit distance with adjacent transpositions (optimal string alignment),
/// counted in characters. `"comand"`→`"command"` is 1, `"aftre"`→`"after"` is 1.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rolling rows are enough: transpositions look two rows back.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            cur[j] = best;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `word`: within edit distance 2 (compared
/// case-insensitively), or else one that `word` is a prefix of. Ties go to
/// the earliest candidate, so callers pass candidates in a stable order.
pub(crate) fn did_you_mean<'c, I>(word: &str, candidates: I) -> Option<&'c str>
where
    I: IntoIterator<Item = &'c str>,
{
    let lower = word.to_lowercase();
    let mut best: Option<(usize, &'c str)> = None;
    for candidate in candidates {
        let cand_lower = candidate.to_lowercase();
        if cand_lower == lower && candidate != word {
            // Only the case differs: the best possible hint.
            return Some(candidate);
        }
        let distance = edit_distance(&lower, &cand_lower);
        let close = distance <= 2 && distance < cand_lower.chars().count();
        let prefix = !lower.is_empty() && cand_lower.starts_with(&lower);
        if (close || prefix) && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("comand", "command"), 1);
        assert_eq!(edit_distance("aftre", "after"), 1);
        assert_eq!(edit_distance("servce", "service"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ca", "abc"), 3);
    }

    #[test]
    fn suggestions() {
        let keys = ["command", "kind", "restart", "restart_delay", "stop_signal"];
        assert_eq!(did_you_mean("comand", keys), Some("command"));
        assert_eq!(did_you_mean("Command", keys), Some("command"));
        assert_eq!(did_you_mean("restart_dely", keys), Some("restart_delay"));
        assert_eq!(did_you_mean("stop_sig", keys), Some("stop_signal"));
        assert_eq!(did_you_mean("restrt", keys), Some("restart"));
        assert_eq!(did_you_mean("zzzzzz", keys), None);
        // Short words must not match everything within distance 2.
        assert_eq!(did_you_mean("x", ["ab"]), None);
    }
}
