"""`i2v samplers`: list the samplers and noise schedules of the diffusion core."""

from ..diffusion.catalog import SAMPLERS, SCHEDULES

HELP = "list samplers and noise schedules, one line each"
EXAMPLES = """examples:
  i2v samplers
  i2v animate photo.jpg --sampler dpmpp_2m --schedule karras -o out.mp4"""


def add_arguments(parser):
    pass


def run(args) -> int:
    width = max(map(len, list(SAMPLERS) + list(SCHEDULES)))
    print("samplers:")
    for name, (line, fits) in SAMPLERS.items():
        print(f"  {name:<{width}}  {line}{'' if fits == 'any' else f' [{fits} models]'}")
    print("schedules:")
    for name, line in SCHEDULES.items():
        print(f"  {name:<{width}}  {line}")
    return 0
