//! The Porter stemmer exactly as NLTK implements it in its default mode
//! (`nltk.stem.porter.PorterStemmer(mode=NLTK_EXTENSIONS)`, nltk 3.x), which is
//! what Google's `rouge-score` uses for `use_stemmer=True`.
//!
//! This is a rule-by-rule transcription (irregular-forms pool, step 1a..5b with
//! the NLTK extensions: `ies`/`ied` on 4-letter words, `alli` recursion, `fulli`,
//! `logi`, the 2-letter cvc case). `rust-stemmers` implements Snowball's Porter2
//! ("english"), a different algorithm, so it cannot be used for parity.
//! Words are treated as ASCII bytes, which is all rouge-score ever stems (its
//! tokens match `^[a-z0-9]+$`).

fn consonant_flags(w: &[u8]) -> Vec<bool> {
    let mut f: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let v = match c {
            b'a' | b'e' | b'i' | b'o' | b'u' => false,
            b'y' => {
                if i == 0 {
                    true
                } else {
                    !f[i - 1]
                }
            }
            _ => true,
        };
        f.push(v);
    }
    f
}

#[inline]
fn is_consonant(w: &[u8], i: usize) -> bool {
    consonant_flags(&w[..=i])[i]
}

fn measure(stem: &[u8]) -> usize {
    let f = consonant_flags(stem);
    f.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(stem: &[u8]) -> bool {
    !consonant_flags(stem).iter().all(|&c| c)
}

fn ends_double_consonant(w: &[u8]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

fn ends_cvc(w: &[u8]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], b'w' | b'x' | b'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

type Cond<'a> = Option<&'a dyn Fn(&[u8]) -> bool>;

/// `_apply_rule_list`: the first rule whose suffix matches decides.
fn apply_rules(word: &[u8], rules: &[(&[u8], &[u8], Cond)]) -> Vec<u8> {
    for (suffix, repl, cond) in rules {
        if *suffix == b"*d" {
            if ends_double_consonant(word) {
                let stem = &word[..word.len() - 2];
                return if cond.map_or(true, |c| c(stem)) {
                    [stem, repl].concat()
                } else {
                    word.to_vec()
                };
            }
            continue;
        }
        if word.ends_with(suffix) {
            let stem = &word[..word.len() - suffix.len()];
            return if cond.map_or(true, |c| c(stem)) {
                [stem, repl].concat()
            } else {
                word.to_vec()
            };
        }
    }
    word.to_vec()
}

fn pos(stem: &[u8]) -> bool {
    measure(stem) > 0
}

fn step1a(w: &[u8]) -> Vec<u8> {
    if w.ends_with(b"ies") && w.len() == 4 {
        return [&w[..1], b"ie"].concat();
    }
    apply_rules(w, &[(b"sses", b"ss", None), (b"ies", b"i", None), (b"ss", b"ss", None), (b"s", b"", None)])
}

fn step1b(w: &[u8]) -> Vec<u8> {
    if w.ends_with(b"ied") {
        let stem = &w[..w.len() - 3];
        return if w.len() == 4 { [stem, b"ie"].concat() } else { [stem, b"i"].concat() };
    }
    if w.ends_with(b"eed") {
        let stem = &w[..w.len() - 3];
        return if measure(stem) > 0 { [stem, b"ee"].concat() } else { w.to_vec() };
    }
    let mut inter: Option<&[u8]> = None;
    for suf in [&b"ed"[..], &b"ing"[..]] {
        if w.ends_with(suf) {
            let s = &w[..w.len() - suf.len()];
            if contains_vowel(s) {
                inter = Some(s);
                break;
            }
        }
    }
    let Some(is) = inter else { return w.to_vec() };
    let last = is.last().copied();
    let last_arr = [last.unwrap_or(b' ')];
    let dbl = move |_: &[u8]| !matches!(last, Some(b'l') | Some(b's') | Some(b'z'));
    let e_rule = |stem: &[u8]| measure(stem) == 1 && ends_cvc(stem);
    let last_repl: &[u8] = if last.is_some() { &last_arr } else { b"" };
    apply_rules(
        is,
        &[
            (b"at", b"ate", None),
            (b"bl", b"ble", None),
            (b"iz", b"ize", None),
            (b"*d", last_repl, Some(&dbl)),
            (b"", b"e", Some(&e_rule)),
        ],
    )
}

fn step1c(w: &[u8]) -> Vec<u8> {
    let cond = |stem: &[u8]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(w, &[(b"y", b"i", Some(&cond))])
}

fn step2(w: &[u8]) -> Vec<u8> {
    if w.ends_with(b"alli") && pos(&w[..w.len() - 4]) {
        return step2(&[&w[..w.len() - 4], b"al"].concat());
    }
    let p: &dyn Fn(&[u8]) -> bool = &pos;
    let logi = |_: &[u8]| w.len() >= 3 && pos(&w[..w.len() - 3]);
    apply_rules(
        w,
        &[
            (b"ational", b"ate", Some(p)),
            (b"tional", b"tion", Some(p)),
            (b"enci", b"ence", Some(p)),
            (b"anci", b"ance", Some(p)),
            (b"izer", b"ize", Some(p)),
            (b"bli", b"ble", Some(p)),
            (b"alli", b"al", Some(p)),
            (b"entli", b"ent", Some(p)),
            (b"eli", b"e", Some(p)),
            (b"ousli", b"ous", Some(p)),
            (b"ization", b"ize", Some(p)),
            (b"ation", b"ate", Some(p)),
            (b"ator", b"ate", Some(p)),
            (b"alism", b"al", Some(p)),
            (b"iveness", b"ive", Some(p)),
            (b"fulness", b"ful", Some(p)),
            (b"ousness", b"ous", Some(p)),
            (b"aliti", b"al", Some(p)),
            (b"iviti", b"ive", Some(p)),
            (b"biliti", b"ble", Some(p)),
            (b"fulli", b"ful", Some(p)),
            (b"logi", b"log", Some(&logi)),
        ],
    )
}

fn step3(w: &[u8]) -> Vec<u8> {
    let p: &dyn Fn(&[u8]) -> bool = &pos;
    apply_rules(
        w,
        &[
            (b"icate", b"ic", Some(p)),
            (b"ative", b"", Some(p)),
            (b"alize", b"al", Some(p)),
            (b"iciti", b"ic", Some(p)),
            (b"ical", b"ic", Some(p)),
            (b"ful", b"", Some(p)),
            (b"ness", b"", Some(p)),
        ],
    )
}

fn step4(w: &[u8]) -> Vec<u8> {
    let g: &dyn Fn(&[u8]) -> bool = &|s: &[u8]| measure(s) > 1;
    let ion = |s: &[u8]| measure(s) > 1 && matches!(s.last(), Some(b's') | Some(b't'));
    apply_rules(
        w,
        &[
            (b"al", b"", Some(g)),
            (b"ance", b"", Some(g)),
            (b"ence", b"", Some(g)),
            (b"er", b"", Some(g)),
            (b"ic", b"", Some(g)),
            (b"able", b"", Some(g)),
            (b"ible", b"", Some(g)),
            (b"ant", b"", Some(g)),
            (b"ement", b"", Some(g)),
            (b"ment", b"", Some(g)),
            (b"ent", b"", Some(g)),
            (b"ion", b"", Some(&ion)),
            (b"ou", b"", Some(g)),
            (b"ism", b"", Some(g)),
            (b"ate", b"", Some(g)),
            (b"iti", b"", Some(g)),
            (b"ous", b"", Some(g)),
            (b"ive", b"", Some(g)),
            (b"ize", b"", Some(g)),
        ],
    )
}

fn step5a(w: &[u8]) -> Vec<u8> {
    if w.ends_with(b"e") {
        let stem = &w[..w.len() - 1];
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_vec();
        }
    }
    w.to_vec()
}

fn step5b(w: &[u8]) -> Vec<u8> {
    let cond = |_: &[u8]| measure(&w[..w.len() - 1]) > 1;
    apply_rules(w, &[(b"ll", b"l", Some(&cond))])
}

fn pool(w: &str) -> Option<&'static str> {
    Some(match w {
        "sky" | "skies" => "sky",
        "dying" => "die",
        "lying" => "lie",
        "tying" => "tie",
        "news" => "news",
        "innings" | "inning" => "inning",
        "outings" | "outing" => "outing",
        "cannings" | "canning" => "canning",
        "howe" => "howe",
        "proceed" => "proceed",
        "exceed" => "exceed",
        "succeed" => "succeed",
        _ => return None,
    })
}

/// `PorterStemmer().stem(word)` of NLTK for an ASCII lower-case word.
pub fn stem(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    if let Some(p) = pool(&lower) {
        return p.to_string();
    }
    if word.chars().count() <= 2 {
        return lower;
    }
    let w = lower.as_bytes();
    let w = step1a(w);
    let w = step1b(&w);
    let w = step1c(&w);
    let w = step2(&w);
    let w = step3(&w);
    let w = step4(&w);
    let w = step5a(&w);
    let w = step5b(&w);
    String::from_utf8(w).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::stem;
    #[test]
    fn nltk_examples() {
        for (a, b) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("agreed", "agre"),
            ("hopping", "hop"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generalizations", "gener"),
            ("dying", "die"),
            ("controlling", "control"),
            ("analogi", "analog"),
        ] {
            assert_eq!(stem(a), b, "{a}");
        }
    }
}
