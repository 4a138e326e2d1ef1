//! img-plot: a chart of JSON lines, one series per --by value, lines without the fields
//! passed over, and refusals that name the line.

use crate::common::{assert_fails_naming, tool};

const LINES: &str = r#"{"epoch": 1, "step": 10, "train_loss": 4.0, "run": "a"}
{"epoch": 1, "eval_loss": 3.5}

{"epoch": 2, "step": 20, "train_loss": 2.0, "run": "a", "note": "x"}
{"epoch": 1, "step": 10, "train_loss": 3.0, "run": "b"}
{"epoch": 2, "step": 20, "train_loss": null, "run": "b"}
{"epoch": 3, "step": 30, "train_loss": 1.0, "run": "b"}
"#;

#[test]
fn draws_one_polyline_per_series_over_the_lines_that_have_both_fields() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.jsonl"), LINES).unwrap();
    let out = tool("img-plot")
        .current_dir(dir.path())
        .args(["-x", "step", "-y", "train_loss", "--by", "run", "--label", "epoch", "--log-y"])
        .pipe_stdin(dir.path().join("m.jsonl"))
        .unwrap()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let svg = String::from_utf8(out.stdout).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
    // Run a has two points, run b two (its null is passed over): four markers.
    assert_eq!(svg.matches("<circle").count(), 4);
    assert!(svg.contains(">run=a</text>") && svg.contains(">run=b</text>"));
    assert!(svg.contains(">train_loss against step</text>"));
    let polylines: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polyline")).collect();
    assert_eq!(polylines[1].matches(',').count(), 2, "run b: {}", polylines[1]);

    std::fs::write(dir.path().join("bad.jsonl"), "{\"step\": 1, \"loss\": 2}\n{\"step\": 2, \"loss\": \"high\"}\n")
        .unwrap();
    let culprit = "bad.jsonl: line 2: 'loss' is \"high\", expected a number";
    let mut cmd = tool("img-plot");
    cmd.current_dir(dir.path()).args(["bad.jsonl", "-x", "step", "-y", "loss", "-o", "p.svg"]);
    assert_fails_naming(&mut cmd, dir.path(), culprit);
    std::fs::write(dir.path().join("torn.jsonl"), "{\"step\": 1, \"loss\": 2}\n{\"step\": 2, \"lo").unwrap();
    let mut cmd = tool("img-plot");
    cmd.current_dir(dir.path()).args(["torn.jsonl", "-x", "step", "-y", "loss", "-o", "p.svg"]);
    assert_fails_naming(&mut cmd, dir.path(), "torn.jsonl: line 2: is not JSON");
    let mut cmd = tool("img-plot");
    cmd.current_dir(dir.path()).args(["m.jsonl", "-x", "step", "-y", "fid", "-o", "p.svg"]);
    assert_fails_naming(&mut cmd, dir.path(), "no line has numbers for both 'step' and 'fid'");
    tool("img-plot")
        .current_dir(dir.path())
        .args(["m.jsonl", "-x", "step", "-y", "epoch", "-o", "p.svg"])
        .assert()
        .success();
    assert!(std::fs::read_to_string(dir.path().join("p.svg")).unwrap().contains("<polyline"));
}
