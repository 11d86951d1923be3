//! Root integration tests for issue #4 (container lifecycle): log rotation and drivers, restart
//! policies with back-off and across daemon restarts, pause through the shim, hostile `cp`.
//! Each test runs its own private berthd (see `common`) and the real docker CLI.

mod common;

use std::time::{Duration, Instant};

use common::{TestDaemon, can_run};

/// Polls `f` every 50 ms until it returns true; panics with `what` after `limit`.
fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn inspect(d: &TestDaemon, id: &str, fmt: &str) -> String {
    d.ok(&["inspect", "--format", fmt, id]).trim().to_string()
}

fn numbers(s: &str) -> Vec<u32> {
    s.lines()
        .filter_map(|l| l.trim().strip_prefix("line").and_then(|n| n.parse().ok()))
        .collect()
}

#[test]
fn log_rotation_drivers_and_details() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    // 300 numbered lines into a log capped at 3 files of 1000 bytes.
    let id = d.ok(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=3",
        "busybox:local",
        "sh",
        "-c",
        "i=1; while [ $i -le 300 ]; do echo line$i; i=$((i+1)); done",
    ]);
    let id = id.trim();
    d.ok(&["wait", id]);
    let log = d.dir.join(format!("data/containers/{id}/{id}-json.log"));
    assert!(std::fs::metadata(&log).unwrap().len() <= 1000);
    assert!(
        d.dir
            .join(format!("data/containers/{id}/{id}-json.log.1"))
            .exists()
    );
    assert!(
        d.dir
            .join(format!("data/containers/{id}/{id}-json.log.2"))
            .exists()
    );
    assert!(
        !d.dir
            .join(format!("data/containers/{id}/{id}-json.log.3"))
            .exists()
    );
    // `logs` reads the rotated files oldest first: a consecutive run ending at 300.
    let nums = numbers(&d.ok(&["logs", id]));
    assert!(nums.len() > 20, "{nums:?}");
    assert_eq!(*nums.last().unwrap(), 300);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    // --tail reaches into rotated files.
    let n = nums.len();
    let tail = numbers(&d.ok(&["logs", "--tail", &(n - 2).to_string(), id]));
    assert_eq!(tail, nums[2..]);
    assert_eq!(
        numbers(&d.ok(&["logs", "--tail", "3", id])),
        [298, 299, 300]
    );

    // Following a container whose log rotates many times: nothing missing, nothing repeated.
    // (20 files of 2k hold ~500 lines: a follower starved that long on a loaded machine would
    // lose lines by design, as with dockerd.)
    let id2 = d.ok(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=20",
        "busybox:local",
        "sh",
        "-c",
        "sleep 0.3; i=1; while [ $i -le 1000 ]; do echo line$i; i=$((i+1)); usleep 300; done",
    ]);
    let id2 = id2.trim();
    let f = d.docker(&["logs", "-f", id2]);
    assert_eq!(f.code, 0, "{}", f.stderr);
    let got = numbers(&f.stdout);
    let missing = (1..=1000).filter(|n| !got.contains(n)).count();
    assert!(
        got.len() == 1000 && missing == 0 && got.windows(2).all(|w| w[1] == w[0] + 1),
        "{} lines, {missing} missing, first {:?}",
        got.len(),
        &got[..got.len().min(10)]
    );
    assert!(
        d.dir
            .join(format!("data/containers/{id2}/{id2}-json.log.5"))
            .exists()
    );

    // The none driver keeps nothing and `logs` gets dockerd's error.
    let id3 = d.ok(&[
        "run",
        "-d",
        "--log-driver",
        "none",
        "busybox:local",
        "echo",
        "hi",
    ]);
    let id3 = id3.trim();
    d.ok(&["wait", id3]);
    let o = d.docker(&["logs", id3]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .contains("configured logging driver does not support reading"),
        "{}",
        o.stderr
    );
    assert!(
        !d.dir
            .join(format!("data/containers/{id3}/{id3}-json.log"))
            .exists()
    );
    assert_eq!(inspect(&d, id3, "{{.HostConfig.LogConfig.Type}}"), "none");

    // --details: the attributes chosen by `labels=`/`env=` before each line.
    let id4 = d.ok(&[
        "run",
        "-d",
        "--label",
        "app=web",
        "-e",
        "TIER=front end",
        "--log-opt",
        "labels=app",
        "--log-opt",
        "env=TIER",
        "busybox:local",
        "echo",
        "hello",
    ]);
    let id4 = id4.trim();
    d.ok(&["wait", id4]);
    assert_eq!(
        d.ok(&["logs", "--details", id4]),
        "TIER=front+end,app=web hello\n"
    );
    assert_eq!(d.ok(&["logs", id4]), "hello\n");
    let ts = d.ok(&["logs", "--details", "-t", id4]);
    assert!(ts.ends_with("Z TIER=front+end,app=web hello\n"), "{ts}");
    assert_eq!(
        d.ok(&["logs", "--details", id])
            .lines()
            .next()
            .unwrap()
            .chars()
            .next(),
        Some(' ')
    );

    // Bad options: Docker's messages, exit 125, nothing created.
    let before = d.ok(&["ps", "-aq"]);
    for (opt, msg) in [
        ("foo=bar", "unknown log opt 'foo' for json-file log driver"),
        ("max-file=0", "max-file cannot be less than 1"),
        ("max-size=abc", "invalid size: 'abc'"),
    ] {
        let o = d.docker(&["run", "-d", "--log-opt", opt, "busybox:local", "true"]);
        assert_eq!(o.code, 125, "{opt}: {} {}", o.stdout, o.stderr);
        assert!(o.stderr.contains(msg), "{opt}: {}", o.stderr);
    }
    let o = d.docker(&["run", "--log-driver", "nosuch", "busybox:local", "true"]);
    assert_eq!(o.code, 125);
    assert!(
        o.stderr
            .contains("logger: no log driver named 'nosuch' is registered"),
        "{}",
        o.stderr
    );
    assert_eq!(d.ok(&["ps", "-aq"]), before);
}

#[test]
fn log_rotation_compressed() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let opts = ["max-size=1k", "max-file=4", "compress=true"];
    let mut args = vec!["run", "-d"];
    for o in &opts {
        args.extend(["--log-opt", o]);
    }
    args.extend([
        "busybox:local",
        "sh",
        "-c",
        // Paced, so that entries (and files) have distinct times for `--since`.
        "i=1; while [ $i -le 300 ]; do echo line$i; i=$((i+1)); usleep 500; done",
    ]);
    let id = d.ok(&args);
    let id = id.trim();
    d.ok(&["wait", id]);
    let f = |suffix: &str| {
        d.dir
            .join(format!("data/containers/{id}/{id}-json.log{suffix}"))
    };
    // Rotated files are gzipped as dockerd names them; the current one is plain.
    until(Duration::from_secs(10), "the compression", || {
        !f(".1").exists() && f(".1.gz").exists()
    });
    assert!(f(".2.gz").exists() && f(".3.gz").exists() && !f(".4.gz").exists());
    assert!(!f(".2").exists() && !f(".3").exists());
    let gz = std::fs::read(f(".3.gz")).unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    // `logs` reads them: a consecutive run ending at 300, through docker and berth; --tail
    // reaches into compressed files.
    let nums = numbers(&d.ok(&["logs", id]));
    assert!(nums.len() > 30, "{nums:?}");
    assert_eq!(*nums.last().unwrap(), 300);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    let b = d.berth(&["logs", id]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert_eq!(numbers(&b.stdout), nums);
    let n = nums.len();
    let tail = numbers(&d.ok(&["logs", "--tail", &(n - 1).to_string(), id]));
    assert_eq!(tail, nums[1..]);
    // --since from the middle (older gzipped files are skipped by their header's LastTime).
    let stamped = d.ok(&["logs", "-t", id]);
    let mid = stamped
        .lines()
        .nth(n / 2)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let since = numbers(&d.ok(&["logs", "--since", mid, id]));
    assert!(
        nums.ends_with(&since) && since.contains(&nums[n / 2]),
        "{since:?}"
    );
    // Nothing left behind by reading (decompressed into unnamed files).
    let dir = d.dir.join(format!("data/containers/{id}"));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("json.log"))
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");

    // Following a container whose log rotates often, several times between two looks of
    // `logs -f`: the files it was reading are found again in their gzipped form.
    let id2 = d.ok(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=20",
        "--log-opt",
        "compress=true",
        "busybox:local",
        "sh",
        "-c",
        "sleep 0.3; i=1; while [ $i -le 1000 ]; do echo line$i; i=$((i+1)); usleep 300; done",
    ]);
    let id2 = id2.trim();
    let fo = d.docker(&["logs", "-f", id2]);
    assert_eq!(fo.code, 0, "{}", fo.stderr);
    let got = numbers(&fo.stdout);
    let missing = (1..=1000).filter(|n| !got.contains(n)).count();
    assert!(
        got.len() == 1000 && missing == 0 && got.windows(2).all(|w| w[1] == w[0] + 1),
        "{} lines, {missing} missing",
        got.len()
    );

    // dockerd's refusal without room to rotate into.
    let o = d.docker(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "compress=true",
        "busybox:local",
        "true",
    ]);
    assert_eq!(o.code, 125);
    assert!(
        o.stderr.contains(
            "compress cannot be true when max-file is less than 2 or max-size is not set"
        ),
        "{}",
        o.stderr
    );
    d.ok(&["rm", id, id2]);
}

/// `run -d --restart always` of a shell script; its ID.
fn run_failing_always(d: &TestDaemon, script: &str) -> String {
    d.ok(&[
        "run",
        "-d",
        "--restart",
        "always",
        "busybox:local",
        "sh",
        "-c",
        script,
    ])
}

#[test]
fn restart_backoff_stop_and_manual_start() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let id = run_failing_always(&d, "echo run; exit 3");
    let id = id.trim();
    // Between runs the container is `restarting`, listed by `ps` as Docker does.
    let mut saw_restarting = false;
    until(Duration::from_secs(20), "RestartCount 5", || {
        let s = inspect(
            &d,
            id,
            "{{.State.Status}} {{.State.Restarting}} {{.RestartCount}}",
        );
        if s.starts_with("restarting true") {
            saw_restarting = true;
            let ps = d.ok(&[
                "ps",
                "--format",
                "{{.Status}}",
                "--filter",
                &format!("id={id}"),
            ]);
            assert!(
                ps.starts_with("Restarting (3)") || ps.starts_with("Up") || ps.is_empty(),
                "{ps}"
            );
        }
        s.split(' ')
            .nth(2)
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0)
            >= 5
    });
    assert!(saw_restarting);
    // Back-off: 100, 200, 400, 800 ms ... as the daemon scheduled them (its log), and each waited
    // out between runs (times from the container's log). What a restart costs on top (exit,
    // teardown, start: tens of ms on a quiet machine, hundreds under load) is no part of it.
    let delays: Vec<String> = d
        .log()
        .lines()
        .filter(|l| l.contains(id))
        .filter_map(|l| l.split("restarting in ").nth(1))
        .map(|r| {
            r.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect()
        })
        .collect();
    assert!(
        delays.starts_with(&["100ms", "200ms", "400ms", "800ms"].map(String::from)),
        "{delays:?}"
    );
    let ts: Vec<chrono::DateTime<chrono::Utc>> = d
        .ok(&["logs", "-t", id])
        .lines()
        .filter_map(|l| l.split(' ').next())
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .collect();
    assert!(ts.len() >= 5, "{ts:?}");
    let gaps: Vec<i64> = ts
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .collect();
    for (gap, delay) in gaps.iter().zip([100, 200, 400, 800]) {
        assert!(*gap >= delay - 10, "{gaps:?}");
    }

    // `stop` ends the loop, whether the container runs or waits for its next run.
    d.ok(&["stop", "-t", "1", id]);
    let count = inspect(&d, id, "{{.RestartCount}}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        inspect(
            &d,
            id,
            "{{.State.Status}} {{.State.Restarting}} {{.RestartCount}}"
        ),
        format!("exited false {count}")
    );
    // A user's start resets the restart manager, as dockerd's does.
    d.ok(&["start", id]);
    until(Duration::from_secs(10), "a restart after start", || {
        inspect(&d, id, "{{.RestartCount}}")
            .parse::<i64>()
            .unwrap_or(0)
            >= 1
    });
    assert!(inspect(&d, id, "{{.RestartCount}}").parse::<i64>().unwrap() < 4);
    // rm of a restarting container needs -f.
    until(Duration::from_secs(10), "restarting", || {
        inspect(&d, id, "{{.State.Status}}") == "restarting"
            || d.docker(&["rm", id])
                .stderr
                .contains("container is restarting")
    });
    d.ok(&["rm", "-f", id]);
    assert!(d.ok(&["ps", "-aq"]).trim().is_empty());
}

#[test]
fn restarting_reports_running_as_docker() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let id = d.ok(&[
        "run",
        "-d",
        "--restart",
        "on-failure",
        "busybox:local",
        "sh",
        "-c",
        "exit 3",
    ]);
    let id = id.trim();
    // dockerd's SetRestarting: Running stays true while a restart is pending, Pid 0.
    let fmt = "{{.State.Status}} {{.State.Running}} {{.State.Restarting}} {{.State.Paused}} \
               {{.State.Pid}} {{.State.ExitCode}}";
    until(Duration::from_secs(30), "a pending restart", || {
        let s = inspect(&d, id, fmt);
        if s.starts_with("restarting") {
            assert_eq!(s, "restarting true true false 0 3");
            return true;
        }
        false
    });
    // The raw API agrees, and so does ps (without -a: a restarting container counts as running):
    // State `restarting`, Status `Restarting (3) ... ago`, through the API, docker and berth.
    until(
        Duration::from_secs(30),
        "a pending restart in the API",
        || {
            let r = d
                .raw("GET", &format!("/containers/{id}/json"), None)
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            let st = &v["State"];
            st["Status"] == "restarting" && {
                assert_eq!(
                    (&st["Running"], &st["Restarting"]),
                    (&true.into(), &true.into())
                );
                true
            }
        },
    );
    let ps = |out: String| -> bool {
        let out = out.trim().to_string();
        if out.starts_with("restarting") {
            assert!(out.starts_with("restarting Restarting (3) "), "{out}");
            assert!(out.ends_with(" ago"), "{out}");
            return true;
        }
        false
    };
    let f = ["ps", "--format", "{{.State}} {{.Status}}"];
    until(Duration::from_secs(30), "docker ps: Restarting", || {
        ps(d.ok(&f))
    });
    until(Duration::from_secs(30), "berth ps: Restarting", || {
        let o = d.berth(&f);
        assert_eq!(o.code, 0, "{}", o.stderr);
        ps(o.stdout)
    });
    // The list's `status` filter takes the state word, as dockerd's.
    until(Duration::from_secs(30), "status=restarting", || {
        let q = d.ok(&["ps", "-q", "--filter", "status=restarting"]);
        !q.trim().is_empty() && id.starts_with(q.trim())
    });
    // While restarting: `start` is a 304 (running, to dockerd) and `exec` is refused as dockerd
    // refuses it.
    until(
        Duration::from_secs(30),
        "start/exec while restarting",
        || {
            let before = inspect(&d, id, "{{.State.Status}} {{.RestartCount}}");
            if !before.starts_with("restarting") {
                return false;
            }
            let r = d
                .raw("POST", &format!("/containers/{id}/start"), None)
                .unwrap();
            let e = d.docker(&["exec", id, "true"]);
            if inspect(&d, id, "{{.State.Status}} {{.RestartCount}}") != before {
                return false; // a restart (and exit) happened in between: look again
            }
            assert_eq!(r.status, 304, "{}", r.body);
            assert_ne!(e.code, 0);
            assert!(
                e.stderr
                    .contains("is restarting, wait until the container is running"),
                "{}",
                e.stderr
            );
            true
        },
    );
    d.ok(&["rm", "-f", id]);
}

/// Bytes written according to the container's own cgroup files (v1 throttle layer or v2
/// `io.stat`), to tell whether this host accounts block I/O at all.
fn cgroup_write_bytes(id: &str) -> u64 {
    let v1 = format!("/sys/fs/cgroup/blkio/berth/{id}/blkio.throttle.io_service_bytes_recursive");
    let v2 = format!("/sys/fs/cgroup/berth/{id}/io.stat");
    let text = std::fs::read_to_string(v1)
        .or_else(|_| std::fs::read_to_string(v2))
        .unwrap_or_default();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [_, "Write", n] => n.parse().unwrap_or(0),
                [_, rest @ ..] => rest
                    .iter()
                    .find_map(|kv| kv.strip_prefix("wbytes="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
                _ => 0,
            }
        })
        .sum()
}

#[test]
fn stats_block_io() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let id = d.ok(&[
        "run",
        "-d",
        "busybox:local",
        "sh",
        "-c",
        "dd if=/dev/zero of=/f bs=1M count=5 conv=fsync; echo written; sleep 1000",
    ]);
    let id = id.trim();
    until(Duration::from_secs(30), "the write", || {
        d.ok(&["logs", id]).contains("written")
    });
    let r = d
        .raw(
            "GET",
            &format!("/containers/{id}/stats?stream=false&one-shot=true"),
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let body = &r.body[r.body.find('{').unwrap()..=r.body.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let b = &v["blkio_stats"];
    // The Engine API's shape: entries of {major, minor, op, value}; the others null.
    for k in ["io_service_bytes_recursive", "io_serviced_recursive"] {
        for e in b[k].as_array().unwrap_or_else(|| panic!("{k}: {b}")) {
            assert!(
                e["major"].is_u64()
                    && e["minor"].is_u64()
                    && e["op"].is_string()
                    && e["value"].is_u64(),
                "{e}"
            );
        }
    }
    assert!(b["sectors_recursive"].is_null(), "{b}");
    let sum = |op: &str| -> u64 {
        b["io_service_bytes_recursive"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["op"].as_str().unwrap().eq_ignore_ascii_case(op))
            .map(|e| e["value"].as_u64().unwrap())
            .sum()
    };
    let shown = d.ok(&["stats", "--no-stream", "--format", "{{.BlockIO}}", id]);
    let berth = d.berth(&["stats", "--no-stream", "--format", "{{.BlockIO}}", id]);
    assert_eq!(berth.code, 0, "{}", berth.stderr);
    if cgroup_write_bytes(id) > 0 {
        assert!(sum("write") >= 5 << 20, "{b}");
        assert!(shown.trim().ends_with("MB"), "{shown}");
        assert!(berth.stdout.trim().ends_with("MB"), "{}", berth.stdout);
    } else {
        // This host's block layer accounts nothing to the cgroup (seen with virtio disks on
        // cgroup v1): the shape is all there is to check; the parsing has unit tests.
        eprintln!("host accounts no block I/O to cgroups; checked the shape only");
        assert_eq!(sum("write"), 0);
        assert_eq!(shown.trim(), "0B / 0B");
        assert_eq!(berth.stdout.trim(), "0B / 0B");
    }
    d.ok(&["rm", "-f", id]);
}

#[test]
fn restart_policies_across_daemon_restarts() {
    if !can_run() {
        return;
    }
    let mut d = TestDaemon::start();
    d.import_busybox();
    let run = |d: &TestDaemon, policy: &str, name: &str, cmd: &str| {
        d.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            "busybox:local",
            "sh",
            "-c",
            cmd,
        ])
        .trim()
        .to_string()
    };
    // Keeps running across the restart: adopted, not restarted.
    let steady = run(&d, "always", "steady", "echo run; exec sleep 1000");
    // Stopped by the user: `unless-stopped` stays down, `always` comes back (dockerd's rule).
    let us = run(&d, "unless-stopped", "us", "echo run; exec sleep 1000");
    let al = run(&d, "always", "al", "echo run; exec sleep 1000");
    // An exec session running across the restart.
    d.ok(&[
        "exec",
        "-d",
        "steady",
        "sh",
        "-c",
        "sleep 2; echo done > /tmp/exec-done",
    ]);
    // Exec instances through the API: one running across the restart, one created, not started.
    let mk_exec = |cmd: &str| {
        let r = d
            .raw(
                "POST",
                "/containers/steady/exec",
                Some(&format!(r#"{{"Cmd":["sh","-c","{cmd}"]}}"#)),
            )
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v["Id"].as_str().unwrap().to_string()
    };
    let across = mk_exec("sleep 3; exit 5");
    let r = d
        .raw(
            "POST",
            &format!("/exec/{across}/start"),
            Some(r#"{"Detach":true}"#),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let later = mk_exec("exit 6");
    d.ok(&["stop", "-t", "1", "us", "al"]);
    let steady_pid = inspect(&d, &steady, "{{.State.Pid}}");
    // Runs while the daemon is away and exits then: its restart is pending when berthd returns.
    let pending = run(&d, "always", "pending", "echo run; sleep 2; exit 1");

    d.kill9();
    std::thread::sleep(Duration::from_millis(4000));
    d.spawn();

    until(Duration::from_secs(20), "pending restart", || {
        inspect(&d, &pending, "{{.State.Running}} {{.RestartCount}}") == "true 1"
    });
    until(Duration::from_secs(20), "al back", || {
        inspect(&d, &al, "{{.State.Running}}") == "true"
    });
    assert_eq!(
        inspect(
            &d,
            &steady,
            "{{.State.Running}} {{.State.Pid}} {{.RestartCount}}"
        ),
        format!("true {steady_pid} 0")
    );
    assert_eq!(inspect(&d, &us, "{{.State.Status}}"), "exited");
    // The exec's process survived the daemon and did its work.
    until(Duration::from_secs(10), "exec result", || {
        d.docker(&["exec", "steady", "cat", "/tmp/exec-done"])
            .stdout
            == "done\n"
    });
    // The exec instances are still known: the one that ran across the restart reports its exit
    // code, the other starts now.
    let exec_json = |id: &str| -> serde_json::Value {
        let r = d.raw("GET", &format!("/exec/{id}/json"), None).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    };
    until(Duration::from_secs(15), "exec exit code", || {
        let v = exec_json(&across);
        v["Running"] == false && v["ExitCode"] == 5
    });
    assert_eq!(exec_json(&later)["Running"], false);
    let r = d
        .raw(
            "POST",
            &format!("/exec/{later}/start"),
            Some(r#"{"Detach":true}"#),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    until(Duration::from_secs(10), "second exec", || {
        exec_json(&later)["ExitCode"] == 6
    });
    // Nothing duplicated: one run per start.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.ok(&["logs", &pending]).matches("run").count(), 2);
    assert_eq!(d.ok(&["logs", &steady]).matches("run").count(), 1);
    assert_eq!(d.ok(&["logs", &al]).matches("run").count(), 2);
    d.ok(&["rm", "-f", &pending, &steady, &us, &al]);
}

#[test]
fn pause_goes_through_the_shim() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let id = d.ok(&["run", "-d", "busybox:local", "sleep", "1000"]);
    let id = id.trim();
    let sock = d.dir.join(format!("exec/containers/{id}/shim.sock"));
    let shim_status = || {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(b"{\"op\":\"state\"}\n").unwrap();
        let mut l = String::new();
        BufReader::new(s).read_line(&mut l).unwrap();
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        v["status"].as_str().unwrap().to_string()
    };
    d.ok(&["pause", id]);
    assert_eq!(shim_status(), "paused");
    assert_eq!(
        inspect(&d, id, "{{.State.Status}} {{.State.Paused}}"),
        "paused true"
    );
    let o = d.docker(&["pause", id]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("is already paused"), "{}", o.stderr);
    d.ok(&["unpause", id]);
    assert_eq!(shim_status(), "running");
    let o = d.docker(&["unpause", id]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("is not paused"), "{}", o.stderr);
    // A copy freezes the container for its duration and thaws it after.
    d.ok(&[
        "cp",
        &format!("{id}:/etc/passwd"),
        d.dir.join("p").to_str().unwrap(),
    ]);
    assert_eq!(shim_status(), "running");
    d.ok(&["pause", id]);
    d.ok(&[
        "cp",
        &format!("{id}:/etc/passwd"),
        d.dir.join("p2").to_str().unwrap(),
    ]);
    assert_eq!(shim_status(), "paused");
    d.ok(&["rm", "-f", id]);
}

#[test]
fn hostile_cp_stays_inside_the_container() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    // A host file the container must never reach, and where a host write would land.
    let secret = d.dir.join("host-secret");
    std::fs::write(&secret, "HOST SECRET\n").unwrap();
    let landing = d.dir.join("host-landing");
    std::fs::create_dir_all(&landing).unwrap();
    let s = secret.to_str().unwrap();
    let l = landing.to_str().unwrap();
    let parent = d.dir.to_str().unwrap();
    let setup = format!(
        "mkdir -p {parent} {l} && echo CTR > {s} && ln -s / /rootlink && ln -s {s} /secretlink \
         && ln -s ../../../../../../../ /uplink && ln -s {l} /landlink && mkdir /flip && \
         while true; do mv /flip /flip.d; ln -s / /flip; rm /flip; mv /flip.d /flip; done"
    );
    let id = d.ok(&["run", "-d", "busybox:local", "sh", "-c", &setup]);
    let id = id.trim();
    until(Duration::from_secs(10), "setup", || {
        d.docker(&["exec", id, "test", "-L", "/landlink"]).code == 0
    });
    let out = d.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let get = |src: &str, dst: &str| {
        let dst = out.join(dst);
        let o = d.docker(&["cp", &format!("{id}:{src}"), dst.to_str().unwrap()]);
        (o.code, std::fs::read_to_string(&dst).unwrap_or_default())
    };
    // Reads through symlinks and `..` resolve inside the container.
    assert_eq!(get(&format!("/rootlink{s}"), "a"), (0, "CTR\n".into()));
    assert_eq!(get(&format!("/uplink{s}"), "b"), (0, "CTR\n".into()));
    assert_eq!(get(&format!("/../../../..{s}"), "c"), (0, "CTR\n".into()));
    assert!(!get("/secretlink/.", "d").1.contains("HOST"));
    let (code, text) = get("/secretlink", "e");
    assert!(code != 0 || !text.contains("HOST"), "{code} {text}");
    // Writes through symlinks land inside the container, never on the host.
    let src = d.dir.join("payload");
    std::fs::write(&src, "PAYLOAD\n").unwrap();
    for dst in ["/landlink", "/rootlink/../landlink", "/uplink/landlink"] {
        let _ = d.docker(&["cp", src.to_str().unwrap(), &format!("{id}:{dst}")]);
        assert!(
            std::fs::read_dir(&landing).unwrap().next().is_none(),
            "cp to {dst} wrote on the host"
        );
    }
    // A tar whose entries try to climb out, or go through a link to the host root.
    let evil = d.dir.join("evil.tar");
    {
        let f = std::fs::File::create(&evil).unwrap();
        let mut b = tar::Builder::new(f);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "esc", l).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        b.append_data(&mut h, "esc/pwned", &b"evil"[..]).unwrap();
        b.finish().unwrap();
    }
    let body = String::from_utf8(std::fs::read(&evil).unwrap()).unwrap();
    let r = d
        .raw(
            "PUT",
            &format!("/containers/{id}/archive?path=/tmp"),
            Some(&body),
        )
        .unwrap();
    assert!(
        r.status == 200 || r.status == 400,
        "{} {}",
        r.status,
        r.body
    );
    assert!(std::fs::read_dir(&landing).unwrap().next().is_none());
    // Racing a directory against a symlink to `/` while copying: never the host's file.
    for i in 0..30 {
        let (_, text) = get(&format!("/flip/../{s}"), &format!("r{i}"));
        assert!(!text.contains("HOST"), "race read the host file");
        let _ = d.docker(&["cp", src.to_str().unwrap(), &format!("{id}:/flip/")]);
        assert!(std::fs::read_dir(&landing).unwrap().next().is_none());
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "HOST SECRET\n");
    d.ok(&["rm", "-f", id]);
}

#[test]
fn init_reaps_forwards_and_passes_the_exit_code() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    // PID 1 is berth's init, the command its child.
    let ps = d.ok(&[
        "run",
        "--rm",
        "--init",
        "busybox:local",
        "ps",
        "-o",
        "pid,args",
    ]);
    let first = ps.lines().nth(1).unwrap_or("");
    assert!(
        first.trim_start().starts_with("1 ") && first.contains("berth-shim --init -- ps"),
        "{ps}"
    );
    // Orphans are reaped: no zombie left after their parent is gone.
    let out = d.ok(&[
        "run",
        "--rm",
        "--init",
        "busybox:local",
        "sh",
        "-c",
        "(sleep 0.2 &); (sleep 0.2 &); sleep 1; ps -o stat,comm",
    ]);
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with('Z')),
        "{out}"
    );
    // The exit code is the command's.
    let o = d.docker(&["run", "--init", "busybox:local", "sh", "-c", "exit 7"]);
    assert_eq!(o.code, 7, "{}", o.stderr);
    // SIGTERM reaches a command that is not PID 1 (and so dies of it): 128+15, not a kill.
    let id = d.ok(&["run", "-d", "--init", "busybox:local", "sleep", "1000"]);
    let id = id.trim();
    d.ok(&["stop", "-t", "30", id]);
    assert_eq!(inspect(&d, id, "{{.State.ExitCode}}"), "143");
    assert_eq!(
        inspect(&d, id, "{{.HostConfig.Init}} {{.Path}}"),
        "true sleep"
    );
    // Nothing was written into the container's filesystem for the init.
    assert_eq!(d.ok(&["diff", id]), "");
    d.ok(&["rm", id]);
}

#[test]
fn prune_filters_until_and_labels() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let mk = |label: &str| {
        d.ok(&["create", "--label", label, "busybox:local", "true"])
            .trim()
            .to_string()
    };
    let a = mk("team=a");
    let b = mk("team=b");
    let keep = mk("keep");
    let running = d.ok(&[
        "run",
        "-d",
        "--label",
        "team=a",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    let running = running.trim().to_string();
    // `until=1h`: nothing is that old.
    let out = d.ok(&["container", "prune", "-f", "--filter", "until=1h"]);
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");
    assert_eq!(d.ok(&["ps", "-aq"]).lines().count(), 4);
    // `label=team=a`: only the stopped one of team a.
    let out = d.ok(&["container", "prune", "-f", "--filter", "label=team=a"]);
    assert!(
        out.contains(&a) && !out.contains(&b) && !out.contains(&running),
        "{out}"
    );
    // `label!=keep` with a time in the future: b goes, keep stays.
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let out = d.ok(&[
        "container",
        "prune",
        "-f",
        "--filter",
        "label!=keep",
        "--filter",
        &format!("until={future}"),
    ]);
    assert!(out.contains(&b) && !out.contains(&keep), "{out}");
    let o = d.docker(&["container", "prune", "-f", "--filter", "until=yesterday"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr
            .contains("failed to parse value as time or duration"),
        "{}",
        o.stderr
    );
    let o = d.docker(&["container", "prune", "-f", "--filter", "nosuch=1"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("invalid filter 'nosuch'"), "{}", o.stderr);
    // system prune removes stopped containers too, the running one stays.
    d.ok(&["system", "prune", "-f"]);
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), &running[..12]);
    d.ok(&["rm", "-f", &running]);
}

#[test]
fn image_prune_filters_until_labels_and_all() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let base = d.ok(&["create", "busybox:local", "true"]);
    let base = base.trim();
    // Dangling images with labels: commits of a stopped container, untagged.
    let commit = |label: &str| {
        let id = d.ok(&["commit", "-c", &format!("LABEL {label}"), base]);
        id.trim().to_string()
    };
    let a = commit("team=a");
    let b = commit("team=b");
    let c = commit("other=1");
    let images = |d: &TestDaemon| d.ok(&["images", "-aq", "--no-trunc"]);
    // `label=team=a`: a only.
    let out = d.ok(&["image", "prune", "-f", "--filter", "label=team=a"]);
    assert!(
        out.contains(&format!("deleted: {a}")) && !out.contains(&b) && !out.contains(&c),
        "{out}"
    );
    // `until=1h`: nothing is that old.
    let out = d.ok(&["image", "prune", "-f", "--filter", "until=1h"]);
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");
    assert!(images(&d).contains(&b) && images(&d).contains(&c));
    // `label!=team=b` through berth: c goes, b stays.
    let o = d.berth(&["image", "prune", "-f", "--filter", "label!=team=b"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains(&format!("deleted: {c}")) && !o.stdout.contains(&b),
        "{}",
        o.stdout
    );
    // A time in the future (RFC 3339) lets b go; the tagged base image stays (not dangling).
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let out = d.ok(&[
        "image",
        "prune",
        "-f",
        "--filter",
        &format!("until={future}"),
    ]);
    assert!(out.contains(&format!("deleted: {b}")), "{out}");
    assert!(!images(&d).contains(&b));
    // `-a`: tagged images no container uses, here those without the label `keep` (the built-in
    // hello-world too); busybox:local stays as a stopped container uses it.
    let keep = commit("keep=yes");
    d.ok(&["tag", &keep, "keep:1"]);
    let gone = commit("team=c");
    d.ok(&["tag", &gone, "gone:1"]);
    let o = d.berth(&["image", "prune", "-a", "-f", "--filter", "label!=keep"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("untagged: gone:1") && o.stdout.contains(&format!("deleted: {gone}")),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains(&keep), "{}", o.stdout);
    let left = d.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut left: Vec<&str> = left.lines().collect();
    left.sort();
    assert_eq!(left, ["busybox:local", "keep:1"]);
    // The docker CLI's -a with a label: keep:1 goes.
    let out = d.ok(&["image", "prune", "-a", "-f", "--filter", "label=keep=yes"]);
    assert!(out.contains("untagged: keep:1"), "{out}");
    // Bad filters are refused as dockerd refuses them.
    let o = d.docker(&["image", "prune", "-f", "--filter", "until=yesterday"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr
            .contains("failed to parse value as time or duration"),
        "{}",
        o.stderr
    );
    let o = d.docker(&["image", "prune", "-f", "--filter", "nosuch=1"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("invalid filter 'nosuch'"), "{}", o.stderr);
    d.ok(&["rm", base]);
}

#[test]
fn force_remove_wins_over_pending_restarts() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    // `rm -f` lands at every point of the exit/back-off/start cycle: it must always remove.
    for i in 0..12u64 {
        let id = run_failing_always(&d, "exit 3");
        std::thread::sleep(Duration::from_millis(i * 37 % 250));
        d.ok(&["rm", "-f", id.trim()]);
    }
    assert!(d.ok(&["ps", "-aq"]).trim().is_empty());
}
