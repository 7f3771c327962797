"""The README's promises: its test command is CI's, the listing prints, and
every package the code imports is declared in the requirements files; the
documentation's links resolve; docs/DESIGN.md's import rules hold."""

import ast
import os
import re
import sys
import tomllib

from vit_jax.models import __main__ as zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
  with open(os.path.join(ROOT, *parts)) as f:
    return f.read()


def _readme_commands():
  blocks = re.findall(r'```\n(.*?)\n```', _read('README.md'), re.S)
  return [line.strip() for block in blocks for line in block.splitlines()
          if line.strip().startswith('python3 -m venv')]


def test_ci_runs_exactly_the_readme_test_command():
  commands = _readme_commands()
  test_commands = [c for c in commands if 'pytest' in c]
  assert len(test_commands) == 1, commands
  ci_lines = [line.strip() for line in _read('.ci', 'run').splitlines()]
  assert test_commands[0] in ci_lines
  assert any('xla_force_host_platform_device_count=8' in line
             for line in ci_lines)


def test_readme_main_job_is_the_digits_run():
  main_jobs = [c for c in _readme_commands() if 'pytest' not in c]
  assert len(main_jobs) == 1
  assert ('-m vit_jax.main --config=configs/digits.py --workdir='
          in main_jobs[0])


def test_docs_point_inside_the_repository():
  """The design notes live in docs/; nothing refers to the old copy outside
  the repository (the strings are split so this file does not match)."""
  outside = ('../' 'shared', 'shared/' 'DESIGN')
  assert '(docs/DESIGN.md)' in _read('README.md')
  assert os.path.isfile(os.path.join(ROOT, 'docs', 'DESIGN.md'))
  paths = ['README.md']
  for directory in ('vit_jax', 'tests', 'configs', 'benchmarks', 'launch',
                    'docs'):
    for root, _, files in os.walk(os.path.join(ROOT, directory)):
      paths += [os.path.relpath(os.path.join(root, name), ROOT)
                for name in files if name.endswith(('.py', '.md'))]
  for path in paths:
    text = _read(path)
    assert not any(pattern in text for pattern in outside), path


def test_listing_prints_a_row_per_variant(capsys):
  zoo.main(['--family', 'mixer'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].split() == ['model', 'variant', 'params', 'GFLOPs@224']
  rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines[1:]}
  expected_variants = [e[1] for e in zoo.ZOO if e[0] == 'mixer']
  assert [v for _, v in rows] == expected_variants
  assert rows[('mixer', 'B/16')][0] == '59,880,472'
  assert rows[('mixer', 'L/16')][0] == '208,196,168'
  # Mixer-B/16's matmuls are 12.6 G multiply-adds at 224 px (the paper's
  # figure); the listing counts them analytically, 2 FLOPs each.
  gmacs = float(rows[('mixer', 'B/16')][1]) / 2
  assert abs(gmacs - 12.6) <= 0.05


# ----------------------------------------------------------------------------
# Every third-party import is a declared requirement.

# Top-level import name -> distribution name, where they differ by more than
# case and '-' vs '_'. A name absent here is taken as its own distribution.
IMPORT_TO_DISTRIBUTION = {
    'PIL': 'Pillow',
    'absl': 'absl-py',
    'cv2': 'opencv-python',
    'orbax': 'orbax-checkpoint',
    'skimage': 'scikit-image',
    'sklearn': 'scikit-learn',
    'tensorflow': 'tensorflow-cpu',
    'yaml': 'PyYAML',
}

# Imported only by the golden-file generators tests/support/make_golden*.py
# and their shared core golden_torch.py, which are run by hand (see their
# docstrings); the tests read their committed output and never import these.
HAND_RUN_ONLY = {'monai', 'timm', 'torch', 'torchvision', 'transformers'}
HAND_RUN_FILES = ('make_golden', 'golden_torch')

# Optional imports, imported only when asked for: the PyTorch side of
# `benchmarks/train_throughput.py --compare=timm` (run by hand), and W&B.
OPTIONAL_IMPORTS = {
    os.path.join('benchmarks', 'train_throughput.py'): {'timm', 'torch'},
    # Weights & Biases, only with config.wandb.project (a clear error names
    # `pip install wandb` otherwise); requirements-test.txt has it.
    os.path.join('vit_jax', 'metric_writer.py'): {'wandb'},
}

# (directory, requirements files its imports may use). The library and the
# recipes get the runtime list only; tests and benchmarks also the test list.
IMPORT_SCOPES = (
    ('vit_jax', ('requirements.txt',)),
    ('configs', ('requirements.txt',)),
    ('tests', ('requirements.txt', 'requirements-test.txt')),
    ('benchmarks', ('requirements.txt', 'requirements-test.txt')),
)


def _canonical(distribution):
  return re.sub(r'[-_.]+', '-', distribution).lower()


def declared_distributions(*requirement_files):
  """Canonical names of the distributions listed in requirement files."""
  names = set()
  for name in requirement_files:
    for line in _read(name).splitlines():
      line = line.split('#', 1)[0].strip()
      if line and not line.startswith('-'):
        names.add(_canonical(re.match(r'[A-Za-z0-9._-]+', line).group()))
  return names


def top_level_imports(source):
  """Top-level names of the absolute imports in Python source."""
  names = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names.update(alias.name.split('.')[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names.add(node.module.split('.')[0])
  return names


def undeclared_imports(imports, declared, local_modules=()):
  """The third-party names in `imports` whose distribution is not declared."""
  third_party = (set(imports) - set(sys.stdlib_module_names)
                 - set(local_modules) - {'vit_jax'})
  return sorted(name for name in third_party if _canonical(
      IMPORT_TO_DISTRIBUTION.get(name, name)) not in declared)


def _python_files(directory):
  for root, _, files in os.walk(os.path.join(ROOT, directory)):
    for name in sorted(files):
      if name.endswith('.py'):
        yield os.path.join(root, name)


def test_every_third_party_import_is_a_declared_requirement():
  problems = []
  for directory, requirement_files in IMPORT_SCOPES:
    declared = declared_distributions(*requirement_files)
    # Modules of one tree import each other by name (tests/support/ is on
    # the tests' sys.path: tests/conftest.py).
    local_modules = {os.path.splitext(os.path.basename(path))[0]
                     for path in _python_files(directory)}
    for path in _python_files(directory):
      with open(path) as f:
        imports = top_level_imports(f.read())
      relative = os.path.relpath(path, ROOT)
      if os.path.basename(path).startswith(HAND_RUN_FILES):
        imports -= HAND_RUN_ONLY
      imports -= OPTIONAL_IMPORTS.get(relative, set())
      for name in undeclared_imports(imports, declared, local_modules):
        problems.append(f'{relative} imports {name!r} (distribution '
                        f'{IMPORT_TO_DISTRIBUTION.get(name, name)!r}), which '
                        f'is not in {" or ".join(requirement_files)}')
  assert not problems, '\n'.join(problems)


def test_import_check_catches_an_undeclared_package():
  declared = declared_distributions('requirements.txt')
  source = ('import os\nimport numpy as np\nimport yaml\n'
            'import pytest\nfrom sklearn import svm\n'
            'from . import sibling\nimport vit_jax.models\n')
  assert undeclared_imports(top_level_imports(source), declared) == [
      'pytest', 'yaml']
  test_declared = declared_distributions('requirements.txt',
                                         'requirements-test.txt')
  assert undeclared_imports(top_level_imports(source), test_declared) == [
      'yaml']
  # torch is allowed in the hand-run golden generators only.
  assert undeclared_imports({'torch'}, test_declared) == ['torch']


def test_package_metadata_reads_the_requirements_files():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    pyproject = tomllib.load(f)
  assert pyproject['project']['requires-python'] == '>=3.11'
  assert set(pyproject['project']['dynamic']) == {'dependencies',
                                                  'optional-dependencies'}
  dynamic = pyproject['tool']['setuptools']['dynamic']
  assert dynamic['dependencies'] == {'file': ['requirements.txt']}
  assert dynamic['optional-dependencies'] == {
      'test': {'file': ['requirements-test.txt']}}


# A test's bound on a subprocess or a wait: generous, because CI may run
# on a loaded 2-core machine (the whole suite once took 47 minutes there,
# and a 300 s bound failed). CI's own time limit is the real guard.
MIN_TEST_TIMEOUT = 900
# The SLURM harness's own short polls of the cluster's state.
_TIMEOUT_EXEMPT = ('slurm_cluster.py', 'test_slurm_cluster.py',
                   'gcs_emulator.py')


def short_timeouts(source, filename='<test>'):
  """(line, value) of each `timeout=N` (a call's keyword or a function's
  default) below MIN_TEST_TIMEOUT seconds in `source`."""
  found = []
  for node in ast.walk(ast.parse(source, filename)):
    pairs = []
    if isinstance(node, ast.Call):
      pairs = [(k.arg, k.value) for k in node.keywords]
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      args = node.args.args[len(node.args.args) - len(node.args.defaults):]
      pairs = [(a.arg, d) for a, d in zip(args, node.args.defaults)]
      pairs += [(a.arg, d) for a, d in zip(node.args.kwonlyargs,
                                           node.args.kw_defaults) if d]
    for name, value in pairs:
      if (name and 'timeout' in name and isinstance(value, ast.Constant)
          and isinstance(value.value, (int, float))
          and value.value < MIN_TEST_TIMEOUT):
        found.append((value.lineno, value.value))
  return found


def test_tests_bound_their_subprocesses_generously():
  offenders = []
  for path in _python_files('tests'):  # tests/support/ included
    name = os.path.basename(path)
    if name in _TIMEOUT_EXEMPT:
      continue
    relative = os.path.relpath(path, ROOT)
    offenders += [f'{relative}:{line}: timeout={value}'
                  for line, value in short_timeouts(_read(relative), name)]
  assert not offenders, offenders


def test_short_timeout_check_catches_calls_and_defaults():
  source = ('import subprocess\n'
            'def wait(path, timeout=60): pass\n'
            'subprocess.run(["x"], timeout=300)\n'
            'subprocess.run(["x"], timeout=1800)\n'
            'p.communicate(timeout=120.0)\n')
  assert short_timeouts(source) == [(2, 60), (3, 300), (5, 120.0)]


# ----------------------------------------------------------------------------
# Every relative link of the documentation resolves.

# Pages outside docs/ whose links are checked; every page of docs/ is.
LINKED_PAGES = ('README.md', os.path.join('configs', 'README.md'),
                os.path.join('launch', 'README.md'),
                os.path.join('benchmarks', 'README.md'),
                os.path.join('tests', 'data', 'README.md'))

_FENCED = re.compile(r'^```.*?^```[ \t]*$', re.S | re.M)
_CODE_SPAN = re.compile(r'`[^`\n]*`')
_LINK = re.compile(r'!?\[[^\]\n]*\]\(([^()\s]+)\)')
_HEADING = re.compile(r'^#{1,6}[ \t]+(.+?)[ \t#]*$', re.M)


def _prose(markdown):
  """The text a reader sees as prose: code blocks blanked (a `# comment` in
  one is no heading, `a[0](b)` no link); line numbers are kept."""
  return _FENCED.sub(lambda m: '\n' * m.group().count('\n'), markdown)


def github_anchors(markdown):
  """The anchors GitHub gives a page's headings: lowercase, punctuation
  dropped (hyphens and underscores stay), spaces to '-'; a repeated
  heading gets -1, -2, ..."""
  anchors, seen = set(), {}
  for heading in _HEADING.findall(_prose(markdown)):
    slug = re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-')
    anchors.add(slug if slug not in seen else f'{slug}-{seen[slug]}')
    seen[slug] = seen.get(slug, 0) + 1
  return anchors


def broken_links(page, root=ROOT):
  """'page:line: [target] why' for each relative link of `page` (a path
  relative to `root`) whose file or heading does not exist. Links with a
  scheme (https:, mailto:) are left to the reader."""
  with open(os.path.join(root, page)) as f:
    text = _prose(f.read())
  problems = []
  for line_number, line in enumerate(text.splitlines(), 1):
    for target in _LINK.findall(_CODE_SPAN.sub('', line)):
      if re.match(r'[a-z][a-z0-9+.-]*:', target):
        continue
      path, _, anchor = target.partition('#')
      resolved = (os.path.normpath(os.path.join(os.path.dirname(page), path))
                  if path else page)
      where = f'{page}:{line_number}: [{target}]'
      if resolved.startswith('..') or not os.path.exists(
          os.path.join(root, resolved)):
        problems.append(f'{where} {resolved} does not exist')
      elif anchor:
        with open(os.path.join(root, resolved)) as f:
          if anchor not in github_anchors(f.read()):
            problems.append(f'{where} {resolved} has no heading #{anchor}')
  return problems


def _documentation_pages():
  docs = sorted(os.path.join('docs', name)
                for name in os.listdir(os.path.join(ROOT, 'docs'))
                if name.endswith('.md'))
  return list(LINKED_PAGES) + docs


def test_documentation_links_resolve():
  pages = _documentation_pages()
  assert {'README.md', os.path.join('docs', 'DESIGN.md'),
          os.path.join('docs', 'training.md')} <= set(pages)
  problems = [p for page in pages for p in broken_links(page)]
  assert not problems, '\n'.join(problems)
  # The README is the way in: it links every page of docs/.
  readme = _read('README.md')
  unlinked = [page for page in pages if page.startswith('docs')
              and f'({page})' not in readme]
  assert not unlinked, f'README.md links none of {unlinked}'


def test_link_check_catches_a_missing_file_or_heading(tmp_path):
  (tmp_path / 'docs').mkdir()
  (tmp_path / 'docs' / 'other.md').write_text(
      '# Other page\n\n## Set-up on a fresh machine\n\n## Tour, `code` & '
      'all\n\n## Tour, code & all\n\n```\n# not a heading\n```\n')
  (tmp_path / 'docs' / 'page.md').write_text(
      '# Page\n\n'
      'Fine: [o](other.md), [s](other.md#set-up-on-a-fresh-machine), '
      '[t](other.md#tour-code--all-1), [up](../README.md), [me](#page), '
      '[web](https://example.com/x.md).\n'
      'Broken: [m](missing.md) and [a](other.md#no-such-heading),\n'
      '[c](other.md#not-a-heading) [o](../../outside.md) [s](#nowhere).\n'
      '```\nnot a link: x[0](y)\n```\n'
      'Nor is `[a](b.md)` in code.\n')
  (tmp_path / 'README.md').write_text('# Top\n')
  assert broken_links(os.path.join('docs', 'page.md'), str(tmp_path)) == [
      'docs/page.md:4: [missing.md] docs/missing.md does not exist',
      'docs/page.md:4: [other.md#no-such-heading] docs/other.md has no '
      'heading #no-such-heading',
      'docs/page.md:5: [other.md#not-a-heading] docs/other.md has no '
      'heading #not-a-heading',
      'docs/page.md:5: [../../outside.md] ../outside.md does not exist',
      'docs/page.md:5: [#nowhere] docs/page.md has no heading #nowhere',
  ]


# ----------------------------------------------------------------------------
# docs/DESIGN.md's import rules hold for every import of vit_jax/.

IMPORT_RULES_HEADING = '### Import rules'


def _dotted(name):
  """A name of DESIGN's table ('models/', 'models/common.py') as a module
  of vit_jax ('vit_jax.models', 'vit_jax.models.common')."""
  name = name.rstrip('/')
  if name.endswith('.py'):
    name = name[:-len('.py')]
  return '.'.join(['vit_jax'] + name.split('/'))


def import_rules(design):
  """{module: (may import when loaded, may import inside functions)} from
  the table under DESIGN's import-rules heading, names dotted. A module is
  a file or a package with what is under it; a cell's modules are its
  backquoted names ending in '.py' or '/', the rest is commentary."""
  section = design.split(IMPORT_RULES_HEADING, 1)[1].split('\n#', 1)[0]
  rows = [line for line in section.splitlines() if line.startswith('|')]
  rules = {}
  for row in rows[2:]:  # the header and its separator
    cells = [re.findall(r'`([\w/.]+(?:\.py|/))`', cell)
             for cell in row.strip().strip('|').split('|')]
    cells += [[]] * (3 - len(cells))
    for module in cells[0]:
      assert _dotted(module) not in rules, f'two rows for {module}'
      rules[_dotted(module)] = (tuple(map(_dotted, cells[1])),
                                tuple(map(_dotted, cells[2])))
  return rules


def _under(module, names):
  return any(module == name or module.startswith(name + '.')
             for name in names)


def vit_jax_imports(source, module, modules):
  """(line, imported module, inside a function) for each import of vit_jax
  in `source`, the code of `module` (dotted). `modules`, every module of
  the package, tells `from vit_jax.a import b` (module a.b, else a's name
  b) apart. Inside a function means the import runs when the function
  does (lazily); importlib.import_module('vit_jax....') is such an import."""
  package = module if f'{module}.__init__' in modules or any(
      m.startswith(module + '.') for m in modules) else module.rpartition(
          '.')[0]
  found = []

  def visit(node, lazy):
    names = []
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parent = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(parent + ([base] if base else []))
      names = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules
               else base for alias in node.names]
    elif (isinstance(node, ast.Call) and getattr(node.func, 'attr', None)
          == 'import_module' and node.args
          and isinstance(node.args[0], ast.Constant)):
      names = [node.args[0].value]
    found.extend((node.lineno, name, lazy) for name in names
                 if _under(name, ['vit_jax']))
    inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                      ast.Lambda))
    for child in ast.iter_child_nodes(node):
      visit(child, inner)

  visit(ast.parse(source), False)
  return found


def import_rule_violations(rules, sources):
  """One line per import that `rules` (import_rules) do not allow, per
  module without a row, and per name of the rules that is no module;
  `sources` is {dotted module: its code}."""
  modules = set(sources)
  problems = [f'DESIGN\'s import rules name {name}, which is not a module '
              f'of vit_jax' for key, (at_load, lazy) in sorted(rules.items())
              for name in (key,) + at_load + lazy
              if not any(_under(m, [name]) for m in modules)]
  for module, source in sorted(sources.items()):
    rows = [key for key in rules if _under(module, [key])]
    for line, name, lazy in vit_jax_imports(source, module, modules):
      if not rows:
        problems.append(f'{module} (line {line}) imports {name}, but '
                        f'DESIGN\'s import rules have no row for {module}')
        continue
      row = max(rows, key=len)
      at_load, inside = rules[row]
      if _under(name, (row,) + at_load + (inside if lazy else ())):
        continue
      where = 'inside a function' if lazy else 'when loaded'
      problems.append(
          f'{module} (line {line}) imports {name} {where}; DESIGN\'s row '
          f'{row} allows when loaded: {", ".join(at_load) or "nothing"}; '
          f'inside functions also: {", ".join(inside) or "nothing"}')
  return problems


def _vit_jax_sources():
  sources = {}
  for path in _python_files('vit_jax'):
    module = os.path.relpath(path, ROOT)[:-len('.py')].replace(os.sep, '.')
    with open(path) as f:
      sources[module.removesuffix('.__init__')] = f.read()
  return sources


def test_design_import_rules_hold():
  rules = import_rules(_read('docs', 'DESIGN.md'))
  assert rules['vit_jax.paths'] == ((), ())
  assert len(rules) >= 20
  sources = _vit_jax_sources()
  problems = import_rule_violations(rules, sources)
  assert not problems, '\n'.join(problems)
  # Without its row, the model families' imports of each other are refused.
  del rules['vit_jax.models']
  assert any(p.startswith('vit_jax.models (line ') and 'no row' in p
             for p in import_rule_violations(rules, sources))


def test_import_rule_check_names_module_import_and_rule():
  design = '\n'.join([
      '# Design', '', IMPORT_RULES_HEADING, '',
      '| module | may import when loaded | and inside functions |',
      '| --- | --- | --- |',
      '| `paths.py` | nothing | |',
      '| `data/` | nothing outside `data/` | |',
      '| `models/` | nothing outside `models/` | `zoo.py` (`--zoo`) |',
      '| `train.py`, `cli.py` | `models/common.py`, `paths.py` | `data/` |',
      '| `gone.py` | `paths.py` | |',
      '', '## Next section', '| `ignored.py` | `paths.py` | |'])
  rules = import_rules(design)
  assert rules == {
      'vit_jax.paths': ((), ()),
      'vit_jax.data': (('vit_jax.data',), ()),
      'vit_jax.models': (('vit_jax.models',), ('vit_jax.zoo',)),
      'vit_jax.train': (('vit_jax.models.common', 'vit_jax.paths'),
                        ('vit_jax.data',)),
      'vit_jax.cli': (('vit_jax.models.common', 'vit_jax.paths'),
                      ('vit_jax.data',)),
      'vit_jax.gone': (('vit_jax.paths',), ()),
  }
  sources = {
      'vit_jax.paths': 'import os\n',
      'vit_jax.zoo': '',
      'vit_jax.data': '',
      'vit_jax.data.sources': 'from . import pipeline\n',
      'vit_jax.data.pipeline': '',
      'vit_jax.models': 'from vit_jax.models import common\n',
      'vit_jax.models.common': 'from vit_jax import paths\n',
      'vit_jax.models.__main__': (
          'import importlib\n'
          'def listing():\n'
          '  return importlib.import_module("vit_jax.zoo")\n'),
      'vit_jax.train': ('from vit_jax.models import common\n'
                        'def run():\n'
                        '  from vit_jax.data import sources\n'),
      'vit_jax.cli': 'from vit_jax.data import pipeline\n',
      'vit_jax.extra': 'import vit_jax.paths\n',
  }
  assert import_rule_violations(rules, sources) == [
      "DESIGN's import rules name vit_jax.gone, which is not a module of "
      'vit_jax',
      'vit_jax.cli (line 1) imports vit_jax.data.pipeline when loaded; '
      "DESIGN's row vit_jax.cli allows when loaded: vit_jax.models.common, "
      'vit_jax.paths; inside functions also: vit_jax.data',
      'vit_jax.extra (line 1) imports vit_jax.paths, but DESIGN\'s import '
      'rules have no row for vit_jax.extra',
      'vit_jax.models.common (line 1) imports vit_jax.paths when loaded; '
      "DESIGN's row vit_jax.models allows when loaded: vit_jax.models; "
      'inside functions also: vit_jax.zoo',
  ]
  # The same import moved into a function is allowed; relative imports
  # resolve within their package.
  sources['vit_jax.cli'] = 'def f():\n  from vit_jax.data import pipeline\n'
  assert vit_jax_imports(sources['vit_jax.data.sources'],
                         'vit_jax.data.sources', set(sources)) == [
                             (1, 'vit_jax.data.pipeline', False)]
  assert not any('vit_jax.cli' in p
                 for p in import_rule_violations(rules, sources))
