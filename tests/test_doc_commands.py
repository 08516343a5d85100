"""Every command the documents show still exists as written (issue 21, point 3): each `openvica ...` line of a shell
block in README.md, docs/, training/README.md and scenarios/README.md parses with the CLI's own parser (its
subcommand and every flag exist), each `python training/<stage>.py key=value ...` composes its Hydra config with
those overrides (every key exists), each `scenarios generate` line's overrides load its spec, and every Python block
compiles. They are parsed, not run: most need BDD100K, published weights or a GPU; the README's example runs on the
embedded default. A renamed flag or config key fails here."""

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from openvica_sim.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "training" / "README.md",
        ROOT / "scenarios" / "README.md"]
SHELL = {"bash", "sh", "shell", "console", ""}
STAGES = ("tok", "wm", "vdec", "probe", "detector")


def blocks(path: Path) -> list[tuple[str, int, list[str]]]:
    """(language, first line, lines) of every fenced block of a Markdown file."""
    out, block, start, lang = [], None, 0, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)", line)
        if fence:
            if block is None:
                block, start, lang = [], number, fence.group(1)
            else:
                out.append((lang, start, block))
                block = None
        elif block is not None:
            block.append(line)
    return out


def shell_commands(path: Path) -> list[tuple[str, int, list[str]]]:
    """(file, line, argv) of every command line of the file's shell blocks, continuation lines joined, comments and
    environment-variable prefixes dropped, `ray job submit ... --` unwrapped."""
    return [c for lang, start, lines in blocks(path) if lang in SHELL for c in _commands(path, start, lines)]


def _commands(path: Path, start: int, lines: list[str]) -> list[tuple[str, int, list[str]]]:
    out, pending, first = [], "", 0
    for k, line in enumerate(lines, start + 1):
        if not pending:
            first = k
        pending += line.rstrip("\\") + " " if line.rstrip().endswith("\\") else line
        if line.rstrip().endswith("\\"):
            continue
        try:
            argv = shlex.split(pending, comments=True)
        except ValueError:  # not shell (a diagram, a layout)
            argv = []
        pending = ""
        while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):  # RAY_ADDRESS=auto openvica ...
            argv = argv[1:]
        if argv[:3] == ["ray", "job", "submit"] and "--" in argv:
            argv = argv[argv.index("--") + 1:]
        if argv[:3] == ["python", "-m", "openvica_sim.scenarios.generate"]:  # the module the CLI command runs
            argv = ["openvica", "scenarios", "generate", *argv[3:]]
        if argv:
            out.append((str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path), first, argv))
    return out


COMMANDS = [c for doc in DOCS if doc.is_file() for c in shell_commands(doc)]
OPENVICA = [c for c in COMMANDS if c[2][0] == "openvica"]
TRAINING = [c for c in COMMANDS if c[2][0] == "python" and len(c[2]) > 1
            and re.fullmatch(r"training/(\w+)\.py", c[2][1]) and Path(c[2][1]).stem in STAGES]


def test_the_documents_show_commands_of_every_kind():
    assert len(OPENVICA) >= 20 and len(TRAINING) >= 5
    assert {argv[1] for _, _, argv in OPENVICA} >= {"rollout", "scenarios", "eval", "data", "synthetic"}


@pytest.mark.parametrize("where, line, argv", OPENVICA, ids=[f"{w}:{n}" for w, n, _ in OPENVICA])
def test_every_documented_openvica_command_parses(where, line, argv, capsys):
    try:
        args = _parser().parse_args(argv[1:])
    except SystemExit as e:
        pytest.fail(f"{where}:{line}: `{shlex.join(argv)}` no longer parses: {capsys.readouterr().err.strip()}"
                    if e.code else f"{where}:{line}: `{shlex.join(argv)}` only prints help")
    assert hasattr(args, "run"), f"{where}:{line}: `{shlex.join(argv)}` names a command group, not a command"
    if argv[1:3] == ["scenarios", "generate"]:
        from openvica_sim.scenarios.spec import load_spec

        load_spec(args.spec, args.overrides)  # its key=value overrides name fields of the spec


@pytest.mark.parametrize("where, line, argv", TRAINING, ids=[f"{w}:{n}" for w, n, _ in TRAINING])
def test_every_documented_training_command_composes_its_config(where, line, argv):
    overrides = [a for a in argv[2:] if "=" in a and not a.startswith("-")]
    with initialize_config_dir(config_dir=str(ROOT / "training" / "conf"), version_base="1.3"):
        compose(Path(argv[1]).stem, overrides=overrides)  # an unknown key raises, naming it


PYTHON = [(str(doc.relative_to(ROOT)), start, "\n".join(lines)) for doc in DOCS if doc.is_file()
          for lang, start, lines in blocks(doc) if lang == "python"]


# The Python blocks the tests below run (on the embedded default, or the bundle the page makes); every other block
# starts with "# needs: ..." (a GPU, BDD100K, published weights, a Ray cluster, your model) and is compiled only.
RUN = {("README.md", "env.step("), ("docs/getting-started.md", 'write_contact_sheet("env.png"'),
       ("docs/getting-started.md", "sim.branch(")}


@pytest.mark.parametrize("where, line, code", PYTHON, ids=[f"{w}:{n}" for w, n, _ in PYTHON])
def test_every_documented_python_block_is_python_and_runs_here_or_says_what_it_needs(where, line, code):
    compile(code, f"{where}:{line}", "exec")
    runs = [mark for doc, mark in RUN if doc == where and mark in code]
    assert runs or code.startswith("# needs:"), f"{where}:{line}: run it in tests/test_doc_commands.py or begin " \
                                                "it with '# needs: ...' (what it needs that the tests lack)"


def test_the_readme_example_runs_on_the_embedded_default():
    [(_, line, code)] = [p for p in PYTHON if p[0] == "README.md"]
    namespace: dict = {}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)
    assert namespace["out"].frames.shape == (1, 14, 256, 256, 3) and namespace["obs"].shape == (256, 256, 3)


def test_the_getting_started_env_loop_runs_and_writes_its_video_and_contact_sheet(tmp_path, monkeypatch):
    [(_, line, code)] = [p for p in PYTHON if p[0] == "docs/getting-started.md" and 'write_contact_sheet("env.png"' in p[2]]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"docs/getting-started.md:{line}", "exec"), {})
    assert (tmp_path / "env.mp4").stat().st_size > 0 and (tmp_path / "env.png").stat().st_size > 0


def test_the_getting_started_engine_block_runs_on_the_bundle_its_page_makes(tmp_path, monkeypatch):
    [(_, line, code)] = [p for p in PYTHON if p[0] == "docs/getting-started.md" and "sim.branch(" in p[2]]
    [argv] = [c[2] for c in OPENVICA if c[0] == "docs/getting-started.md" and c[2][1:3] == ["bundle", "random"]]
    monkeypatch.chdir(tmp_path)
    args = _parser().parse_args(argv[1:])
    args.run(args)  # `openvica bundle random --preset tiny --out my-bundle`, as the page shows it
    namespace: dict = {}
    exec(compile(code, f"docs/getting-started.md:{line}", "exec"), namespace)
    assert namespace["out"].frames.shape == (2, 14, 256, 256, 3) and namespace["step"].frames.shape == (2, 256, 256, 3)


def test_a_renamed_flag_would_fail(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("```bash\nopenvica scenarios generate --spec fog --seeds clips.zarr --out fog\n```\n")
    [(_, _, argv)] = _commands(tmp_path, 0, doc.read_text().splitlines()[1:2])
    with pytest.raises(SystemExit):
        _parser().parse_args(argv[1:])


def test_every_command_s_help_names_its_guide_and_the_guide_exists():
    import argparse

    def leaves(parser, path=()):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path, parser
        for action in subs:
            for name, child in action.choices.items():
                yield from leaves(child, (*path, name))

    found = list(leaves(_parser()))
    assert len(found) >= 15
    for path, parser in found:
        guide = re.search(r"Guide: (docs/[\w-]+\.md)", parser.format_help())
        assert guide, f"`openvica {' '.join(path)} --help` names no guide"
        assert (ROOT / guide.group(1)).is_file(), f"`openvica {' '.join(path)}` names {guide.group(1)}, which is missing"
