// The flags each `kvshard` command reads. Abseil registers every flag of the binary, so without
// this any command would take any flag and silently ignore the ones it does not read (`kvshard
// inspect --kv-dtype fp8`); main refuses those by name, and `kvshard <command> --help` lists the
// command's own flags with their help and defaults. A command's list is the union of the groups
// of flags that the code it runs reads (model loading, the engine, tensor parallelism, sampling)
// and its own.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvs {

struct CommandFlags {
  std::string_view name;
  std::string_view usage;  // one line, as in the top-level usage
  std::vector<std::string_view> flags;
};

// Every command, in the order the usage lists them.
const std::vector<CommandFlags>& AllCommandFlags();
const CommandFlags* FindCommandFlags(std::string_view command);
// The first `--flag` of `args` (flag names already with '_' for '-') that `command` does not
// read, and the message that refuses it; empty when every flag is the command's. Abseil's own
// flags (--flagfile, --fromenv, ...) are every command's; a boolean's --noflag form is accepted.
std::string RefuseForeignFlags(const CommandFlags& command, const std::vector<std::string>& args);
// `kvshard <command> --help`: the usage line, then each flag with its help text and default.
std::string CommandHelp(const CommandFlags& command);
// Flag names listed for a command that the binary does not define (a test keeps this empty).
std::vector<std::string> UndefinedListedFlags();

}  // namespace kvs
