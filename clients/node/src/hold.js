// Run by `switchboard exec` when Switchboard.start() starts a server: it hands the server's
// environment to the kit on standard output, then holds the server up until the kit closes its
// standard input (stop(), or the test process ending in any way).
const names = [
  'SWITCHBOARD_URL', 'SWITCHBOARD_HTTPS_URL', 'SWITCHBOARD_APP_ID', 'SWITCHBOARD_TENANT_ID',
  'SWITCHBOARD_CLIENT_SECRET', 'SWITCHBOARD_TOKEN', 'SWITCHBOARD_CA_FILE', 'SWITCHBOARD_ADMIN_TOKEN',
];
const env = Object.fromEntries(names.filter((name) => process.env[name]).map((name) => [name, process.env[name]]));
process.stdout.write(`switchboard-testkit ready ${JSON.stringify(env)}\n`);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
