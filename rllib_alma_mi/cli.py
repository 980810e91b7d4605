"""Command line of rllib_alma_mi."""
import argparse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rllib-alma-mi")
    parser.parse_args(argv)
    parser.print_help()
    return 0
