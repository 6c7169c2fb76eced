//! The closure of the requested modules, in the order they must be loaded.
//!
//! Each request is looked up in the [`ModuleTree`] (name, builtin, alias); each module found brings
//! its `pre:` soft dependencies and its `modules.dep` dependencies first, depth first, so every
//! module comes after everything it needs. A module appears once, with the first reason that
//! brought it in (an explicit request wins over being a dependency).
//!
//! A module is *required* (fledge-init stops the boot when it fails to load) when it was
//! requested by a name or alias that means exactly that module, or is a `modules.dep`
//! dependency of a required module. Soft dependencies and the several modules one alias may
//! match are loaded but optional: such a module may refuse to load on the guest's hardware
//! (`crc32c_intel` without SSE4.2) while another does the job.

use std::collections::HashMap;

use super::tree::{Lookup, ModuleTree};
use super::{KmodError, Request};

/// Why a module is in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Named in `[kernel] modules` (as itself or through this alias).
    Requested { asked: String },
    /// `modules.dep` lists it for this module.
    Dependency { of: String },
    /// A `pre:` soft dependency of this module.
    Softdep { of: String },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Requested { asked } => write!(f, "requested as {asked}"),
            Reason::Dependency { of } => write!(f, "dependency of {of}"),
            Reason::Softdep { of } => write!(f, "softdep of {of}"),
        }
    }
}

/// One module to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    /// Its path in the tree, as `modules.dep` names it.
    pub rel: String,
    pub reason: Reason,
    /// Parameters given with the request.
    pub params: Option<String>,
    /// A failure to load it ends the boot.
    pub required: bool,
}

/// A name that needs nothing loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builtin {
    /// The module built into the kernel.
    pub name: String,
    pub reason: Reason,
}

/// The modules to load, in load order, and what was found built in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    pub modules: Vec<Resolved>,
    pub builtin: Vec<Builtin>,
    /// Soft dependencies the tree does not have (they are optional).
    pub warnings: Vec<String>,
}

/// Resolves `requests` against `tree`.
pub fn resolve(tree: &ModuleTree, requests: &[Request]) -> Result<Resolution, KmodError> {
    let mut r = Resolver {
        tree,
        out: Resolution::default(),
        placed: HashMap::new(),
        stack: Vec::new(),
    };
    for req in requests {
        let reason = Reason::Requested {
            asked: req.name.clone(),
        };
        match tree.lookup(&req.name) {
            Lookup::Modules(names) => {
                let required = names.len() == 1;
                for name in names {
                    r.visit(&name, &reason, required)?;
                    let i = r.placed[&name];
                    let m = &mut r.out.modules[i];
                    m.reason = reason.clone();
                    m.params = req.params.clone();
                }
            }
            Lookup::Builtin(name) => r.builtin(name, reason),
            Lookup::Unknown => {
                return Err(KmodError::Unknown {
                    name: req.name.clone(),
                    dir: tree.dir.clone(),
                    closest: tree.closest(&req.name),
                })
            }
        }
    }
    Ok(r.out)
}

struct Resolver<'a> {
    tree: &'a ModuleTree,
    out: Resolution,
    /// Index in `out.modules` of each module placed.
    placed: HashMap<String, usize>,
    /// Modules being visited, for cycle detection.
    stack: Vec<String>,
}

impl Resolver<'_> {
    fn builtin(&mut self, name: String, reason: Reason) {
        if !self.out.builtin.iter().any(|b| b.name == name) {
            self.out.builtin.push(Builtin { name, reason });
        }
    }

    /// Marks a placed module and its dependencies required.
    fn require(&mut self, name: &str) {
        let i = self.placed[name];
        if !self.out.modules[i].required {
            self.out.modules[i].required = true;
            for dep in &self.tree.modules[name].deps {
                self.require(dep);
            }
        }
    }

    /// Places `name` after its soft and hard dependencies.
    fn visit(&mut self, name: &str, reason: &Reason, required: bool) -> Result<(), KmodError> {
        if self.placed.contains_key(name) {
            if required {
                self.require(name);
            }
            return Ok(());
        }
        if let Some(at) = self.stack.iter().position(|s| s == name) {
            let mut cycle = self.stack[at..].to_vec();
            cycle.push(name.to_string());
            return Err(KmodError::Cycle {
                dir: self.tree.dir.clone(),
                cycle,
            });
        }
        let tree = self.tree;
        let entry = &tree.modules[name];
        self.stack.push(name.to_string());
        for soft in tree.softdeps.get(name).into_iter().flatten() {
            let why = Reason::Softdep { of: name.into() };
            match tree.lookup(soft) {
                Lookup::Modules(names) => {
                    // A soft dependency that leads back here is dropped, as modprobe does.
                    for n in names {
                        if !self.stack.contains(&n) {
                            self.visit(&n, &why, false)?;
                        }
                    }
                }
                Lookup::Builtin(b) => self.builtin(b, why),
                Lookup::Unknown => self.out.warnings.push(format!(
                    "{name}: soft dependency {soft} is not in {}; it is left out",
                    tree.dir.display()
                )),
            }
        }
        // modules.dep lists the nearest dependency first; modprobe loads the list from its end.
        for dep in entry.deps.iter().rev() {
            self.visit(dep, &Reason::Dependency { of: name.into() }, required)?;
        }
        self.stack.pop();
        self.placed.insert(name.to_string(), self.out.modules.len());
        self.out.modules.push(Resolved {
            name: name.to_string(),
            rel: entry.rel.clone(),
            reason: reason.clone(),
            params: None,
            required,
        });
        Ok(())
    }
}
