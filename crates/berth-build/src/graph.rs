//! The stage graph: which stages a target needs (unused ones are skipped), their dependencies
//! (`FROM <stage>`, `COPY --from=<stage>`, `RUN --mount=from=<stage>`), a build order, and waves
//! of mutually independent stages that may run in parallel.

use std::collections::BTreeSet;

use crate::error::{BuildError, Result};
use crate::parser::{Dockerfile, Instruction};
use crate::shell::{Lexer, VarLookup};

/// The stages to build for a target, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The target stage's index.
    pub target: usize,
    /// Stage indices to build, dependencies first (a topological order).
    pub order: Vec<usize>,
    /// For each stage index, the stages it depends on.
    pub deps: Vec<BTreeSet<usize>>,
    /// `order` grouped: each wave's stages depend only on earlier waves.
    pub waves: Vec<Vec<usize>>,
}

/// Finds the stage a `FROM`/`--from` name refers to among stages before `before`: a stage name
/// (case-insensitive) or, for `--from`, a stage index.
pub fn stage_ref(df: &Dockerfile, name: &str, before: usize, allow_index: bool) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    if let Some(s) = df.stages[..before]
        .iter()
        .rev()
        .find(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        return Some(s.index);
    }
    if allow_index && let Ok(i) = name.parse::<usize>() {
        return (i < before).then_some(i);
    }
    None
}

/// Builds the plan for `target` (a stage name; default the last stage). `meta` expands `FROM`
/// lines and `--from` values (meta ARGs and build args).
pub fn plan(df: &Dockerfile, target: Option<&str>, meta: &dyn VarLookup) -> Result<Plan> {
    let lex = Lexer::new(df.escape);
    let target = match target.filter(|t| !t.is_empty()) {
        None => df.stages.len() - 1,
        Some(t) => stage_ref(df, t, df.stages.len(), false).ok_or_else(|| {
            BuildError::Invalid(format!("failed to reach build target {t} in Dockerfile"))
        })?,
    };
    let mut deps = vec![BTreeSet::new(); df.stages.len()];
    for s in &df.stages {
        let ex = |w: &str| lex.process_word(w, meta).unwrap_or_else(|_| w.to_string());
        if let Some(d) = stage_ref(df, &ex(&s.base), s.index, false) {
            deps[s.index].insert(d);
        }
        for i in &s.instructions {
            let from = match &i.inst {
                Instruction::Copy(c) => c.from.clone().into_iter().collect::<Vec<_>>(),
                Instruction::Run { mounts, .. } => {
                    mounts.iter().filter_map(|m| m.from.clone()).collect()
                }
                _ => Vec::new(),
            };
            for f in from {
                if let Some(d) = stage_ref(df, &ex(&f), s.index, true) {
                    deps[s.index].insert(d);
                }
            }
        }
    }
    // Stages reachable from the target.
    let mut needed = BTreeSet::new();
    let mut stack = vec![target];
    while let Some(s) = stack.pop() {
        if needed.insert(s) {
            stack.extend(deps[s].iter().copied());
        }
    }
    // Dependencies always have lower indices, so index order is topological; waves by depth.
    let order: Vec<usize> = needed.iter().copied().collect();
    let mut depth = vec![0usize; df.stages.len()];
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for &s in &order {
        depth[s] = deps[s].iter().map(|d| depth[*d] + 1).max().unwrap_or(0);
        if waves.len() <= depth[s] {
            waves.resize(depth[s] + 1, Vec::new());
        }
        waves[depth[s]].push(s);
    }
    Ok(Plan {
        target,
        order,
        deps,
        waves,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;

    #[test]
    fn skips_unused_stages_and_groups_independent_ones() {
        let df = parse(
            "ARG BASE=busybox\nFROM $BASE AS a\nFROM busybox AS b\nFROM busybox AS unused\nFROM a AS c\nCOPY --from=b /x /x\nCOPY --from=0 /y /y\n",
        )
        .unwrap();
        let meta: Vec<String> = vec!["BASE=busybox".into()];
        let p = plan(&df, None, &meta).unwrap();
        assert_eq!(p.order, vec![0, 1, 3]);
        assert_eq!(p.waves, vec![vec![0, 1], vec![3]]);
        let p = plan(&df, Some("B"), &meta).unwrap();
        assert_eq!(p.order, vec![1]);
        assert_eq!(
            plan(&df, Some("nope"), &meta).unwrap_err().to_string(),
            "failed to reach build target nope in Dockerfile"
        );
    }
}
