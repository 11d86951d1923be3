//! Merging an image's config into a create request's config, as dockerd does.

use berth_api::container::Config;

/// Fills `user`'s unset fields from the image's config (Docker's `merge`).
pub fn merge(user: &mut Config, image: &Config) {
    if user.user.is_empty() {
        user.user = image.user.clone();
    }
    if let Some(ports) = &image.exposed_ports {
        let mine = user.exposed_ports.get_or_insert_with(Default::default);
        for (k, v) in ports {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    for ie in &image.env {
        let key = ie.split('=').next().unwrap_or("");
        if !user
            .env
            .iter()
            .any(|ue| ue.split('=').next().unwrap_or("") == key)
        {
            user.env.push(ie.clone());
        }
    }
    for (k, v) in &image.labels {
        user.labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let user_ep_empty = user.entrypoint.as_ref().is_none_or(Vec::is_empty);
    if user_ep_empty {
        if user.cmd.as_ref().is_none_or(Vec::is_empty) {
            user.cmd = image.cmd.clone();
            user.args_escaped = image.args_escaped;
        }
        if user.entrypoint.is_none() {
            user.entrypoint = image.entrypoint.clone();
        }
    }
    if user.healthcheck.is_none() {
        user.healthcheck = image.healthcheck.clone();
    }
    if user.working_dir.is_empty() {
        user.working_dir = image.working_dir.clone();
    }
    if let Some(vols) = &image.volumes {
        let mine = user.volumes.get_or_insert_with(Default::default);
        for (k, v) in vols {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if user.stop_signal.as_deref().unwrap_or("").is_empty() {
        user.stop_signal = image.stop_signal.clone().filter(|s| !s.is_empty());
    }
    if user.on_build.is_empty() {
        user.on_build = image.on_build.clone();
    }
    if user.shell.is_none() {
        user.shell = image.shell.clone();
    }
}

/// The process's path and arguments: entrypoint followed by cmd.
pub fn entrypoint_and_args(c: &Config) -> Option<(String, Vec<String>)> {
    let mut all: Vec<String> = c.entrypoint.clone().unwrap_or_default();
    all.extend(c.cmd.clone().unwrap_or_default());
    if all.is_empty() {
        return None;
    }
    let path = all.remove(0);
    Some((path, all))
}

/// The command as `docker ps` shows it: args containing spaces in single quotes.
pub fn command_string(path: &str, args: &[String]) -> String {
    if args.is_empty() {
        return path.to_string();
    }
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect();
    format!("{path} {}", args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Option<Vec<String>> {
        Some(s.iter().map(|x| x.to_string()).collect())
    }

    fn image() -> Config {
        Config {
            env: vec!["PATH=/bin".into(), "A=img".into()],
            cmd: v(&["sh"]),
            entrypoint: v(&["/init"]),
            working_dir: "/srv".into(),
            user: "nobody".into(),
            labels: [("a".to_string(), "img".to_string())].into(),
            stop_signal: Some("SIGQUIT".into()),
            ..Default::default()
        }
    }

    #[test]
    fn cmd_only_keeps_image_entrypoint() {
        let mut u = Config {
            cmd: v(&["echo", "hi"]),
            env: vec!["A=user".into()],
            labels: [("b".to_string(), "u".to_string())].into(),
            ..Default::default()
        };
        merge(&mut u, &image());
        assert_eq!(u.entrypoint, v(&["/init"]));
        assert_eq!(u.cmd, v(&["echo", "hi"]));
        assert_eq!(u.env, vec!["A=user".to_string(), "PATH=/bin".to_string()]);
        assert_eq!(u.labels.len(), 2);
        assert_eq!(u.working_dir, "/srv");
        assert_eq!(u.user, "nobody");
        assert_eq!(u.stop_signal.as_deref(), Some("SIGQUIT"));
    }

    #[test]
    fn entrypoint_resets_image_cmd() {
        let mut u = Config {
            entrypoint: v(&["/bin/date"]),
            ..Default::default()
        };
        merge(&mut u, &image());
        assert_eq!(u.entrypoint, v(&["/bin/date"]));
        assert_eq!(u.cmd, None);
        assert_eq!(
            entrypoint_and_args(&u),
            Some(("/bin/date".to_string(), vec![]))
        );
    }

    #[test]
    fn empty_entrypoint_clears_image_entrypoint_but_keeps_cmd() {
        let mut u = Config {
            entrypoint: Some(vec![]),
            ..Default::default()
        };
        merge(&mut u, &image());
        assert_eq!(u.entrypoint, Some(vec![]));
        assert_eq!(u.cmd, v(&["sh"]));
    }

    #[test]
    fn nothing_given_takes_both() {
        let mut u = Config::default();
        merge(&mut u, &image());
        assert_eq!(
            entrypoint_and_args(&u),
            Some(("/init".to_string(), vec!["sh".to_string()]))
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(command_string("/hello", &[]), "/hello");
        assert_eq!(
            command_string("sh", &["-c".into(), "exit 3".into()]),
            "sh -c 'exit 3'"
        );
    }
}
