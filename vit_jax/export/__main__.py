"""Export a training run's checkpoint.

    python -m vit_jax.export --workdir=DIR --format=timm|npz|hf --out=PATH
        [--step=N] [--image_size=N] [--config=configs/FILE.py[:ARG]]

`vit_jax.export.export_run`: reads DIR/config.json (or --config) for the
model (family and kwargs), the run's evaluation preprocessing
(config.data.pp_eval as timm's data config: `export/data_config.py`) and
its dataset's class names, restores the variables of
DIR/checkpoints at the step (the latest by default;
`checkpoint.restore_variables`), and writes them with `export` / `save`: a
directory for timm (model.safetensors and config.json; a .safetensors PATH:
the weights alone) and hf, an .npz file for npz. An MAE run exports its
encoder as a ViT. Prints the files written, and a warning line for what
the export cannot carry (a pp_eval with no timm counterpart, class names
not found). Bad input (flags, an
unsupported family / format pair, a missing config or checkpoint): one line
on stderr, exit status 2. DIR and PATH may be local or gs://
(`vit_jax.paths`).
"""

import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging

from vit_jax import cli  # --workdir, --config
from vit_jax import export as export_lib
from vit_jax import layout

_FORMAT = flags.DEFINE_enum('format', None, list(export_lib.FORMATS),
                            'Export format.')
_OUT = flags.DEFINE_string(
    'out', None, 'Output: a directory (timm, hf; for timm a .safetensors '
    'file holds the weights alone) or an .npz file; local or gs://.')
_STEP = flags.DEFINE_integer('step', None,
                             'Checkpoint step; the latest by default.')
_IMAGE_SIZE = flags.DEFINE_integer(
    'image_size', None, 'Resolution written into the configs (and of a '
    'sincos2d position embedding); by default what the parameters say, '
    'else 224.')


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f'unexpected arguments {argv[1:]}', 'vit_jax.export')
  if not flags.FLAGS['verbosity'].present:  # orbax's notes on reading
    logging.set_verbosity(logging.ERROR)
  # The export's own warnings, one line each, whatever the verbosity
  # (put back as they were: tests call main in one process).
  handler = std_logging.StreamHandler(sys.stderr)
  handler.setFormatter(std_logging.Formatter(
      'vit_jax.export: warning: %(message)s'))
  export_logger = std_logging.getLogger('vit_jax.export')
  saved_propagate, saved_level = export_logger.propagate, export_logger.level
  export_logger.addHandler(handler)
  export_logger.propagate = False
  export_logger.setLevel(std_logging.WARNING)
  try:
    written = export_lib.export_run(cli.WORKDIR.value, _FORMAT.value,
                                    _OUT.value, _STEP.value,
                                    _IMAGE_SIZE.value, cli.CONFIG.value)
  except (FileNotFoundError, ValueError) as error:
    print(f'vit_jax.export: {cli.one_line(error)}', file=sys.stderr)
    sys.exit(layout.EXIT_USAGE)
  except OSError as error:  # e.g. --out not writable, a full disk
    print(f'vit_jax.export: cannot write {_OUT.value}: {cli.one_line(error)}',
          file=sys.stderr)
    sys.exit(layout.EXIT_FAILED)
  finally:
    export_logger.removeHandler(handler)
    export_logger.propagate = saved_propagate
    export_logger.setLevel(saved_level)
  for path in written:
    print(path)
  if _FORMAT.value == 'timm' and not _OUT.value.endswith('.safetensors') and (
      not any(path.endswith(export_lib.CONFIG_NAME) for path in written)):
    print('vit_jax.export: no timm config.json: no timm entry point builds '
          'this model (timm\'s Mixer and ConvMixer ones fix their sizes); '
          'load the state dict into a model built by hand.', file=sys.stderr)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir', 'format', 'out'])
  app.run(main, flags_parser=lambda argv: cli.parse_flags(
      ['vit_jax.export', *argv[1:]]))
