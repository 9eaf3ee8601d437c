use super::*;

const GOOD: &str = "\
Behaviour: the reflink prep unmaps the destination range of a live mapping
Source: fs/xfs/xfs_reflink.c xfs_reflink_remap_prep (6.12.117)
Source: ../shared/dax-semantics.md
Cases: reflink/destination-mapping-sees-the-clone/xfs/dax=always
  reflink/destination-mapping-sees-the-clone/xfs/dax=never
Survives: nothing stores through
  the stale entry (power loss, issue 14)

--- a/fs/xfs/xfs_reflink.c
+++ b/fs/xfs/xfs_reflink.c
@@ -1544,11 +1544,7 @@ xfs_reflink_remap_prep(
 \t * from EOF to the end of the copy length.
 \t */
-\tif (pos_out > XFS_ISIZE(dest)) {
-\t\tloff_t\tflen = *len + (pos_out - XFS_ISIZE(dest));
-\t\tret = xfs_flush_unmap_range(dest, XFS_ISIZE(dest), flen);
-\t} else {
-\t\tret = xfs_flush_unmap_range(dest, pos_out, *len);
-\t}
+\tret = 0;
 \tif (ret)
 \t\tgoto out_unlock;
";

fn parse_str(text: &str) -> Result<Mutant, String> {
    parse(Path::new("mutants/m.patch"), text)
}

#[test]
fn a_header_and_its_diff() {
    let m = parse_str(GOOD).unwrap();
    assert_eq!(m.name, "m");
    assert_eq!(m.behaviour, "the reflink prep unmaps the destination range of a live mapping");
    assert_eq!(m.sources.len(), 2);
    assert_eq!(
        m.cases,
        [
            "reflink/destination-mapping-sees-the-clone/xfs/dax=always",
            "reflink/destination-mapping-sees-the-clone/xfs/dax=never"
        ]
    );
    assert_eq!(
        m.survives.as_deref(),
        Some("nothing stores through the stale entry (power loss, issue 14)")
    );
    assert_eq!(m.files, ["fs/xfs/xfs_reflink.c"]);
    // Six lines removed, one added.
    assert_eq!(m.changed_lines, 6);
}

#[test]
fn each_header_mistake_names_its_line_and_the_fix() {
    let cases = [
        (
            GOOD.replace("Behaviour:", "Behavior:"),
            "mutants/m.patch:1: unknown header key \"Behavior\"",
        ),
        (
            GOOD.replace("Source: ../shared/dax-semantics.md\n", "Source:\n"),
            "mutants/m.patch:3: Source: has no value",
        ),
        (
            GOOD.replacen("Source: ", "Behaviour: again\nSource: ", 1),
            "mutants/m.patch:2: a second Behaviour",
        ),
        (
            GOOD.replace("Cases: reflink", "Cases reflink"),
            "mutants/m.patch:4: expected a `Key: value` header line",
        ),
        (
            format!("  stray\n{GOOD}"),
            "mutants/m.patch:1: an indented line continues no header line",
        ),
        (GOOD.split("\n---").next().unwrap().to_string(), "mutants/m.patch:1: no diff"),
        (
            GOOD.lines()
                .filter(|l| !l.starts_with("Cases") && !l.starts_with("  reflink"))
                .collect::<Vec<_>>()
                .join("\n"),
            "mutants/m.patch:1: no Cases",
        ),
        (
            GOOD.replace("+++ b/fs", "+++ fs"),
            "mutants/m.patch:10: \"fs/xfs/xfs_reflink.c\": the new file's name starts with b/",
        ),
        (GOOD.replace("+++ b/fs", "+++ b/../fs"), "a path inside the kernel tree"),
    ];
    for (text, want) in cases {
        let e = parse_str(&text).unwrap_err();
        assert!(e.contains(want), "want {want:?}, got {e:?}");
    }
}

#[test]
fn a_mutant_is_a_small_change() {
    let big: String = (0..16).map(|i| format!("+int x{i};\n")).collect();
    let text = GOOD.replace("+\tret = 0;\n", &big);
    let e = parse_str(&text).unwrap_err();
    assert!(
        e.contains("the diff changes 16 lines: a mutant is a small change of at most 15"),
        "{e}"
    );
    let none = GOOD
        .lines()
        .filter(|l| !l.starts_with(['-', '+']) || l.starts_with("---") || l.starts_with("+++"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(parse_str(&none).unwrap_err().contains("the diff changes no line"));
}

#[test]
fn only_names_mutants_there_are() {
    let a = parse_str(GOOD).unwrap();
    let b = Mutant { name: "b".into(), ..a.clone() };
    let all = vec![a, b];
    assert_eq!(select(all.clone(), &[]).unwrap().len(), 2);
    assert_eq!(select(all.clone(), &["b".into()]).unwrap()[0].name, "b");
    let e = select(all, &["c".into()]).unwrap_err().to_string();
    assert_eq!(e, "--only c: no mutants/c.patch; the mutants are m, b");
}

#[test]
fn every_mutant_of_the_project_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mutants = load_all(root).unwrap();
    assert!(mutants.len() >= 12, "{} mutants", mutants.len());
}

#[test]
fn a_case_filter_that_selects_nothing_is_named_with_its_file() {
    let m = parse_str(GOOD).unwrap();
    let ids = ["reflink/destination-mapping-sees-the-clone/xfs/dax=always"];
    assert_eq!(
        unknown_cases(std::slice::from_ref(&m), &ids),
        ["mutants/m.patch: Cases: reflink/destination-mapping-sees-the-clone/xfs/dax=never \
          selects no case of scenarios/ (`cargo xtask list` shows the case ids)"]
    );
    let all = [
        "reflink/destination-mapping-sees-the-clone/xfs/dax=always",
        "reflink/destination-mapping-sees-the-clone/xfs/dax=never",
    ];
    assert!(unknown_cases(&[m], &all).is_empty());
}
