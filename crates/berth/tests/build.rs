//! `berth build`'s output: the step view on a terminal, docker's classic lines when piped, the
//! `image build` / `builder prune` spellings; against a private berthd.

mod common;

use common::*;

#[test]
fn step_view_on_a_terminal_and_plain_lines_when_piped() {
    let Some(d) = Daemon::start() else { return };
    if d.busybox("busybox:local").is_none() {
        eprintln!("skipping: no busybox");
        return;
    }
    let ctx = d.dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f.txt"), "f").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:local\nCOPY f.txt /f\nRUN echo visible-output && cat /f\n",
    )
    .unwrap();
    let dir = ctx.to_str().unwrap();
    let (c, screen) = pty_run(&d, &["build", "-t", "viewed", dir], &[]);
    assert_eq!(c, 0, "{screen}");
    assert!(
        screen.contains("Step 3/3 : RUN echo visible-output"),
        "{screen}"
    );
    assert!(screen.contains("visible-output"), "{screen}");
    assert!(screen.contains("=> done"), "{screen}");
    assert!(screen.contains("Build finished in"), "{screen}");
    assert!(screen.contains("(3 steps, 0 cached)"), "{screen}");
    let (c, screen) = pty_run(&d, &["image", "build", "-t", "viewed", dir], &[]);
    assert_eq!(c, 0, "{screen}");
    assert!(screen.contains("=> CACHED"), "{screen}");
    assert!(screen.contains("(3 steps, 2 cached)"), "{screen}");
    // Piped: exactly the classic builder's lines.
    let o = d.run(&["build", "-t", "viewed", dir]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("Sending build context to Docker daemon  "),
        "{text}"
    );
    assert_eq!(lines[1], "Step 1/3 : FROM busybox:local");
    assert_eq!(lines[4], " ---> Using cache");
    assert!(
        lines.iter().any(|l| l.starts_with("Successfully built ")),
        "{text}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("Successfully tagged viewed:latest")
    );
    // A failing step: its output, docker's message on stderr, its exit code.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox:local\nRUN exit 4\n").unwrap();
    let o = d.run(&["build", "--force-rm", dir]);
    assert_eq!(code(&o), 4, "{}", err(&o));
    assert!(
        err(&o).contains("The command '/bin/sh -c exit 4' returned a non-zero code: 4"),
        "{}",
        err(&o)
    );
    let o = d.run(&["builder", "prune", "-f"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(out(&o).contains("Total reclaimed space:"), "{}", out(&o));
}
