// `reals launch`: the flags of torchrun (src/pipelines/launch.ts starts and watches the ranks).
import { Command } from 'commander';
import { launch } from '../pipelines/launch.js';
import { integer } from './parse.js';

interface LaunchFlags { nprocPerNode: number; nnodes: number; nodeRank: number; masterAddr: string; masterPort: number }

export function launchCommand(): Command {
  return new Command('launch')
    .description('start one process per rank with the environment of torchrun (RANK, WORLD_SIZE, MASTER_ADDR, ...)')
    .usage('[options] -- <command...>')
    .argument('<command...>', 'a reals command (`sit train ...`), or a program when the first word is `node` or contains a `/`')
    .option('--nproc-per-node <n>', 'processes (ranks) to start on this node', integer(1), 1)
    .option('--nnodes <n>', 'nodes taking part', integer(1), 1)
    .option('--node-rank <r>', 'index of this node, 0 .. nnodes-1', integer(0), 0)
    .option('--master-addr <host>', 'address of the node running rank 0 (hosts the rendezvous store)', '127.0.0.1')
    .option('--master-port <port>', 'free TCP port on the master node', integer(1, 65535), 29500)
    .addHelpText('after', `
Each rank runs the command with RANK = node-rank * nproc-per-node + LOCAL_RANK, LOCAL_RANK,
WORLD_SIZE = nnodes * nproc-per-node, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR and MASTER_PORT set
(and OMP_NUM_THREADS=1 when several ranks share the node and it is not set, as torchrun).
The command after \`--\` runs as \`reals <command...>\` unless its first word is \`node\` or contains a
\`/\`; then it runs as given. With several ranks each output line is prefixed with [rank R].
When a rank fails, the others get SIGTERM and, 5 s later, SIGKILL; launch exits with the failing
rank's code (128 + signal number for a rank killed by a signal). SIGINT and SIGTERM are forwarded
to the ranks (the trainers then finish their step and save a checkpoint; a second signal ends
them at once), and SIGKILL follows 30 s later; a rank that joined a process group ends with its
launcher even when the launcher is killed with SIGKILL (Linux), so that the other nodes' ranks
fail at once. A collective that waits longer than 5 minutes for a peer (REALS_DIST_TIMEOUT_S
seconds when set) fails, naming the rank and the training step.

Examples:
  reals launch --nproc-per-node 4 -- sit train --data-path data/ --global-batch-size 256
  reals launch --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --nproc-per-node 8 -- sit train ...
  reals launch --nproc-per-node 2 -- node --import tsx my_script.ts`)
    .action(async (command: string[], flags: LaunchFlags, self: Command) => {
      if (flags.nodeRank >= flags.nnodes) self.error(`error: --node-rank ${flags.nodeRank} must be below --nnodes ${flags.nnodes}`);
      process.exitCode = await launch({ command, ...flags });
    });
}
