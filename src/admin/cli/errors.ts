// How a subcommand fails, and so with which exit code (bin/imnode.ts maps them).

/** Bad usage: exit 2. */
export class UsageError extends Error {}
/** The operation was refused (the user exists, is unknown, ...): exit 1. */
export class Failure extends Error {}
/** The operator aborted a prompt. */
export class Interrupted extends Error {}
