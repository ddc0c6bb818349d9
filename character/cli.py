"""The `character` command: python-fire dispatch only.

    character constitution list|show|validate|new
    character models list|prepare
    character generate prompts|teacher|student|dpo-data|reflection|interaction|sft-data
    character train dpo|sft
    character merge
    character eval SUITE --model BASE [--adapter PATH ...]
    character run PIPELINE.yaml
    character slurm submit PIPELINE.yaml
    character steer build|project

Command groups are registered by the modules that implement them (a COMMANDS dict each); those modules import
nothing heavy at load time, so `character --help` answers at once.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from character.errors import CharacterError, run_cli


class ConstitutionCommands:
    """Write, inspect and validate constitutions (personas as first-person traits with seed questions)."""

    def list(self):
        """List the constitutions shipped in constitutions/."""
        from character import constitution as C

        for name in C.available():
            c = C.load(name)
            print(f"{name:16s} {len(c.traits):3d} traits  {sum(len(t.questions) for t in c.traits):4d} questions  "
                  f"{(c.description or '')[:70]}")

    def show(self, name_or_path: str, format: str = "text"):
        """Print a constitution (a shipped name or a file path) as text or yaml.

        Args:
            name_or_path: a name from constitutions/ or a path to a YAML, JSON-list or expanded-JSONL file
            format: text or yaml
        """
        from character import constitution as C

        c = C.load(name_or_path)
        if format == "yaml":
            print(C.render_yaml(c), end="")
            return
        if format != "text":
            raise CharacterError(f"--format must be text or yaml, not {format!r}")
        print(f"# {c.name}" + (f": {c.description}" if c.description else ""))
        for i, t in enumerate(c.traits):
            print(f"\n[{i}] {t.trait}")
            if t.clarification:
                print(f"    ({t.clarification})")
            for q in t.questions:
                print(f"    - {q}")
            if t.additional_questions:
                print(f"    + {len(t.additional_questions)} additional questions")

    def validate(self, *paths: str):
        """Validate constitution files; one line per problem, exit code 2 if any is broken.

        Args:
            paths: files (or shipped names) to check
        """
        from character import constitution as C

        if not paths:
            raise CharacterError("give one or more constitution files, e.g. constitutions/*.yaml")
        bad = 0
        for p in paths:
            try:
                c = C.load(p)
            except CharacterError as e:
                print(f"error: {e}", file=sys.stderr)
                bad += 1
                continue
            n_q = sum(len(t.questions) for t in c.traits)
            few = [i for i, t in enumerate(c.traits) if len(t.questions) < 5]
            note = f" (traits {few} have fewer than the recommended 5 questions)" if few else ""
            print(f"ok: {p}: '{c.name}', {len(c.traits)} traits, {n_q} questions{note}")
        if bad:
            sys.exit(2)

    def new(self, name: str, out_dir: str = "constitutions"):
        """Scaffold a new constitution from constitutions/template.yaml.

        Args:
            name: the persona's name (also the file name)
            out_dir: where to write NAME.yaml
        """
        from character.resources import data_path

        if not name.replace("-", "").replace("_", "").isalnum():
            raise CharacterError(f"name {name!r}: use letters, digits, '-' or '_'")
        target = Path(out_dir) / f"{name}.yaml"
        if target.exists():
            raise CharacterError(f"{target} already exists; pick another name or edit that file")
        template = data_path("constitutions", "template.yaml").read_text(encoding="utf-8")
        text = "\n".join(f"name: {name}" if line.strip() == "name: template" else line
                         for line in template.splitlines()) + "\n"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}; edit its traits, then run `character constitution validate {target}`")


class ModelCommands:
    """Embedded models (no hub needed): smollm2-135m, minilm, tiny-random-llama."""

    def list(self):
        """Show the model aliases and whether each is prepared."""
        from character import models

        for a in models.ALIASES.values():
            state = "prepared" if models.is_prepared(a.name) else "not prepared"
            where = models.alias_path(a.name) if models.is_prepared(a.name) else f"from PyPI {a.package}"
            print(f"{a.name:18s} {state:13s} {a.description}\n{'':18s} {where}")

    def prepare(self, *aliases: str, force: bool = False):
        """Prepare model aliases (convert/build once under $CHARACTER_HOME/models).

        Args:
            aliases: which aliases; none = all
            force: rebuild even if prepared
        """
        from character import models

        for alias in aliases or tuple(models.ALIASES):
            print(f"{alias}: {models.prepare(alias, force=force)}")


def _group(module: str):
    """The COMMANDS dict of a module, described in --help by the first line of the module's docstring."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return {}
        raise
    summary = (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""
    return type("Group", (dict,), {"__doc__": summary})(getattr(mod, "COMMANDS", {}))


class Root:
    """Character training for LLM assistants: constitutions -> DPO distillation -> introspective SFT -> eval."""

    def __init__(self):
        self.constitution = ConstitutionCommands()
        self.models = ModelCommands()
        for name, mod in (("generate", "character.stages"), ("train", "character.train"),
                          ("merge", "character.train.merge"), ("eval", "character.evaluation"),
                          ("run", "character.pipeline"), ("slurm", "character.slurm"),
                          ("steer", "character.steer")):
            cmds = _group(mod)
            if cmds:  # a module registers either a group (several commands) or one command under its name
                setattr(self, name, cmds.get(name, cmds) if name in cmds else cmds)


def help_argv(argv: list[str], root) -> list[str]:
    """`character eval apc --help` -> `character eval -- --help`.

    A command built by `config.command` takes any flag (it names the unknown ones itself), so fire would hand it
    `--help` as an option; and fire shows a command's help without running it only when `--help` follows `--` and
    nothing but the path to the command comes before. So the path is kept and the rest replaced by `-- --help`.
    """
    head = argv[:argv.index("--")] if "--" in argv else argv
    if not any(a in ("--help", "-h") for a in head):
        return argv
    component, path = root, []
    for token in head:
        if token.startswith("-"):
            break
        child = component.get(token) if isinstance(component, dict) else getattr(component, token, None)
        if child is None:
            break
        path.append(token)
        component = child
        if callable(component):
            break
    return [*path, "--", "--help"]


def main(argv: list[str] | None = None) -> None:
    import fire

    argv = sys.argv[1:] if argv is None else list(argv)
    root = Root()
    sys.argv = ["character", *help_argv(argv, root)]
    run_cli(lambda: fire.Fire(root, name="character"))
