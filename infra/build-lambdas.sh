#!/usr/bin/env bash
# Builds the two Lambda bootstraps (binaries `consumer` and `producer`) the way template.yaml deploys them:
# provided.al2023 on arm64 (Graviton), cross-compiled here with cargo-lambda and zig. Prints each bootstrap's
# path, size and `file` line.
#
#   bash infra/build-lambdas.sh            # `sam build` -> .aws-sam/build/{ConsumerFunction,ProducerFunction}/bootstrap
#   bash infra/build-lambdas.sh --cargo    # no SAM CLI: cargo lambda build --release --arm64 --bin consumer --bin producer
#                                          #   -> <target dir>/lambda/{consumer,producer}/bootstrap
#   bash infra/build-lambdas.sh [--cargo] -- ARGS...   # extra arguments for `sam build` / `cargo lambda build`
#   bash infra/build-lambdas.sh [--cargo] --consumer-bin NAME   # your handler's binary instead of `consumer`
#                                          #   (or KAFKA_ESM_CONSUMER_BIN=NAME, also through infra/deploy.sh)
#
# --consumer-bin: the consumer function's binary is named in template.yaml (ConsumerFunction's
# Metadata.BuildProperties.Binary), which cannot take a parameter. With SAM the script builds from a copy of
# template.yaml with that one line changed, written next to it as .kafka-esm-build.template.yaml and removed
# afterwards; .aws-sam/build/template.yaml (what `sam deploy` deploys) then names NAME's bootstrap. The binary
# must be in this workspace (CodeUri: .); for a package elsewhere edit CodeUri in your copy of the template
# (docs/deploy.md, "Deploy your own handler"). With --cargo: `--bin NAME --bin producer`.
#
# Installs what is missing, outside the clone, once (a second run only checks, in about a second):
#   - Debian build packages (infra/install-build-deps.sh: compiler, make, perl, pkg-config);
#   - the Rust standard library for aarch64-unknown-linux-gnu (`rustup target add`, ~10 s);
#   - cargo-lambda from PyPI, which bundles zig (the cross C compiler and linker), into
#     ${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}/cargo-lambda-venv (~30 s);
#   - the SAM CLI (not with --cargo): the one infra/lint-template.sh installed in .../venv when it is there, else
#     `sam` from PATH, else aws-sam-cli (the version lint-template.sh pins) into the cargo-lambda venv (~60 s).
#
# Why the build needs more than a plain `sam build`:
#   - OpenSSL: Cargo.toml vendors it for aarch64 Linux only (openssl-sys "vendored": built from source by zig,
#     a few minutes on the first build); native x86_64 builds keep the system OpenSSL.
#   - librdkafka: rdkafka-sys builds it with its own ./configure, which reads CC and CXX, not cargo's per-target
#     CC_aarch64_unknown_linux_gnu. Without help it compiles librdkafka for x86_64 and the link fails
#     ("... is incompatible with aarch64linux"). So CC and CXX point at two small wrappers (written into the
#     cache) that forward to the zig compilers cargo-lambda sets up for the target, and HOST_CC / HOST_CXX keep
#     host build scripts on the system compiler. For links the wrappers add -Wl,--undefined-version: librdkafka's
#     version script names a symbol this build leaves out, which GNU ld accepts and lld refuses.
#
# The cargo target directory is $CARGO_TARGET_DIR when set, else <repo>/target (cross artifacts go to its
# aarch64-unknown-linux-gnu/ and lambda/ subdirectories). No AWS credentials are needed to build.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}"
target=aarch64-unknown-linux-gnu
# Pinned so a new release cannot change the build on its own; bump on purpose.
cargo_lambda_requirement='cargo-lambda==1.9.2'
# The SAM CLI version infra/lint-template.sh pins (used only when neither its venv nor `sam` on PATH exists).
sam_requirement='aws-sam-cli==1.170.0'
cl_venv="$cache/cargo-lambda-venv"
cl_stamp="$cl_venv/.kafka-esm-requirements"
wrappers="$cache/cross-$target"

say() { echo "build-lambdas: $*" >&2; }
die() { say "$*"; exit 1; }

usage() {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

mode=sam
extra=()
consumer_bin="${KAFKA_ESM_CONSUMER_BIN:-consumer}"
while [ "$#" -gt 0 ]; do
  case "$1" in
    --cargo) mode=cargo ;;
    --sam) mode=sam ;;
    --consumer-bin)
      [ "$#" -ge 2 ] || { usage >&2; die "--consumer-bin needs a binary name"; }
      consumer_bin="$2"
      shift
      ;;
    --consumer-bin=*) consumer_bin="${1#--consumer-bin=}" ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
# A cargo binary name (the template line and the bootstrap's directory are built from it).
[[ "$consumer_bin" =~ ^[A-Za-z0-9_][A-Za-z0-9_-]*$ ]] \
  || die "--consumer-bin (or KAFKA_ESM_CONSUMER_BIN) must be a binary name (letters, digits, _ and -): ${consumer_bin:-empty}"
[ "$consumer_bin" != producer ] || die "--consumer-bin producer: that is the producer function's binary"
bins=("$consumer_bin" producer)

began=$SECONDS

# --- tools ---------------------------------------------------------------------------------------
bash "$repo/infra/install-build-deps.sh"
command -v python3 >/dev/null || die "python3 is missing: install Python 3 (with venv) first"

cd "$repo"
sysroot="$(rustc --print sysroot)"
if [ ! -d "$sysroot/lib/rustlib/$target/lib" ]; then
  command -v rustup >/dev/null \
    || die "the Rust standard library for $target is missing from $sysroot and rustup is not installed: install Rust with rustup, or add that target to your toolchain"
  say "adding the Rust target $target (rustup target add)"
  rustup target add "$target"
fi

if [ ! -x "$cl_venv/bin/cargo-lambda" ] || [ "$(cat "$cl_stamp" 2>/dev/null)" != "$cargo_lambda_requirement" ]; then
  say "installing $cargo_lambda_requirement (with zig) into $cl_venv"
  t=$SECONDS
  rm -rf "$cl_venv"
  python3 -m venv "$cl_venv" || die "python3 -m venv failed: install the python3-venv package"
  "$cl_venv/bin/pip" install --quiet --disable-pip-version-check "$cargo_lambda_requirement" \
    || { rm -rf "$cl_venv"; die "pip install $cargo_lambda_requirement failed (see above)"; }
  echo "$cargo_lambda_requirement" >"$cl_stamp"
  say "cargo-lambda installed in $((SECONDS - t)) s"
fi

sam=""
if [ "$mode" = sam ]; then
  if [ -x "$cache/venv/bin/sam" ]; then
    sam="$cache/venv/bin/sam"
  elif command -v sam >/dev/null; then
    sam="$(command -v sam)"
  else
    if [ ! -x "$cl_venv/bin/sam" ]; then
      say "installing $sam_requirement into $cl_venv"
      t=$SECONDS
      "$cl_venv/bin/pip" install --quiet --disable-pip-version-check "$sam_requirement" \
        || die "pip install $sam_requirement failed (see above); or build without SAM: $0 --cargo"
      say "SAM CLI installed in $((SECONDS - t)) s"
    fi
    sam="$cl_venv/bin/sam"
  fi
fi

# CC/CXX for librdkafka's ./configure: forward to the zig compiler cargo-lambda exports for the target.
mkdir -p "$wrappers"
for tool in cc cxx; do
  var="$(echo "$tool" | tr '[:lower:]' '[:upper:]')_${target//-/_}"
  cat >"$wrappers/$tool.tmp" <<EOF
#!/bin/sh
# Written by infra/build-lambdas.sh: \$$tool for librdkafka's ./configure when cargo-lambda cross-compiles to
# $target. Forwards to the zig wrapper cargo-lambda exports as $var; links get --undefined-version.
real="\${$var:?this wrapper runs only under cargo lambda build (--arm64)}"
case " \$* " in
  *" -c "* | *" -E "* | *" -M "* | *" -MM "* | *" --version "* | *" -v "*) exec "\$real" "\$@" ;;
esac
exec "\$real" "\$@" -Wl,--undefined-version
EOF
  chmod +x "$wrappers/$tool.tmp"
  mv -f "$wrappers/$tool.tmp" "$wrappers/$tool"
done

export PATH="$cl_venv/bin:$PATH"
export CC="$wrappers/cc" CXX="$wrappers/cxx"
export HOST_CC="${HOST_CC:-cc}" HOST_CXX="${HOST_CXX:-c++}"
export SAM_CLI_TELEMETRY="${SAM_CLI_TELEMETRY:-0}"

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
# A librdkafka build interrupted earlier (or one made without these wrappers, with the host compiler) leaves
# objects that make would reuse: drop rdkafka-sys build directories that never finished.
for dir in "$target_dir/$target"/release/build/rdkafka-sys-*/; do
  [ -d "$dir" ] || continue
  if [ -d "$dir/out" ] && [ ! -f "$dir/output" ]; then
    say "removing an unfinished librdkafka build: $dir"
    rm -rf "$dir"
  fi
done

say "tools ready in $((SECONDS - began)) s (cargo-lambda $(cargo-lambda lambda --version 2>/dev/null | awk '{print $2}'), target dir $target_dir)"

# --- build ---------------------------------------------------------------------------------------
build_began=$SECONDS
if [ "$mode" = sam ]; then
  build_template=template.yaml
  if [ "$consumer_bin" != consumer ]; then
    # The same template with ConsumerFunction's `Binary: consumer` (its only one) naming your binary. Next to
    # template.yaml so CodeUri (.) and samconfig.toml resolve as they do for it.
    build_template=.kafka-esm-build.template.yaml
    trap 'rm -f "$repo/.kafka-esm-build.template.yaml"' EXIT
    awk -v bin="$consumer_bin" '
      /^  [A-Za-z0-9]+:/ { inside = ($0 == "  ConsumerFunction:") }
      inside && $0 == "        Binary: consumer" { print "        Binary: " bin; changed++; next }
      { print }
      END { if (changed != 1) exit 1 }
    ' template.yaml >"$build_template" \
      || die "template.yaml: found no single \`Binary: consumer\` line under ConsumerFunction's Metadata to replace"
    say "building ConsumerFunction from binary $consumer_bin ($build_template: template.yaml with its Binary line changed)"
  fi
  say "sam build ($("$sam" --version 2>&1 | awk '{print $NF}')): ${bins[*]} for provided.al2023/arm64"
  "$sam" build --template-file "$build_template" ${extra[@]+"${extra[@]}"}
  artifacts=("$repo/.aws-sam/build/ConsumerFunction/bootstrap" "$repo/.aws-sam/build/ProducerFunction/bootstrap")
else
  say "cargo lambda build --release --arm64 --bin ${bins[*]}"
  cargo lambda build --release --arm64 --bin "$consumer_bin" --bin producer ${extra[@]+"${extra[@]}"}
  artifacts=("$target_dir/lambda/$consumer_bin/bootstrap" "$target_dir/lambda/producer/bootstrap")
fi
say "built in $((SECONDS - build_began)) s (total $((SECONDS - began)) s)"

status=0
for artifact in "${artifacts[@]}"; do
  if [ ! -f "$artifact" ]; then
    say "missing: $artifact"
    status=1
    continue
  fi
  bytes=$(stat -c %s "$artifact")
  printf '%s\t%s bytes (%s MiB)\n' "$artifact" "$bytes" "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')"
  if command -v file >/dev/null; then
    description="$(file -b "$artifact")"
    echo "  $description"
    case "$description" in
      *"ARM aarch64"*) ;;
      *) say "$artifact is not an aarch64 executable"; status=1 ;;
    esac
  fi
done
exit "$status"
