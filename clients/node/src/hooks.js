import { Receiver } from './receiver.js';
import { Switchboard } from './switchboard.js';

/**
 * Registers a test framework's hooks so that every test of the file gets a running Switchboard
 * and a Receiver: started once before the tests (`Switchboard.connect()`), reset and cleared
 * before each test, checked after each test (no invalid token, no failure of the bot) when an
 * `afterEach` hook is given, and stopped after the tests.
 * @param {{before?: Function, beforeAll?: Function, beforeEach: Function, afterEach?: Function,
 *          after?: Function, afterAll?: Function}} hooks the framework's hook functions:
 *   node:test's `before`/`after` or Jest's and Vitest's `beforeAll`/`afterAll`
 * @param {{onNotification?: (notification: object) => unknown, forwardTo?: string, bin?: string,
 *          config?: string, showLogs?: boolean, timeoutMs?: number}} [options] the receiver's
 *   handler or the bot's endpoint (see Receiver.start), and how to start a server
 * @returns {{readonly switchboard: Switchboard, readonly receiver: Receiver, readonly ready: Promise<void>}}
 */
export function useSwitchboard(hooks, { onNotification, forwardTo, ...startOptions } = {}) {
  const beforeAll = hooks.beforeAll ?? hooks.before;
  const afterAll = hooks.afterAll ?? hooks.after;
  if (!beforeAll || !hooks.beforeEach || !afterAll) {
    throw new Error('useSwitchboard needs the hooks {before, beforeEach, after} (node:test) '
      + 'or {beforeAll, beforeEach, afterAll} (Jest, Vitest).');
  }
  let switchboard;
  let receiver;
  let started;
  const ready = new Promise((resolve, reject) => { started = { resolve, reject }; });
  ready.catch(() => {}); // a failed start fails the hook; nobody need await `ready` too
  beforeAll(async () => {
    try {
      switchboard = await Switchboard.connect(startOptions);
      receiver = await Receiver.start({ switchboard, onNotification, forwardTo });
      started.resolve();
    } catch (error) {
      started.reject(error);
      throw error;
    }
  });
  hooks.beforeEach(async () => {
    await switchboard.reset();
    receiver.clear();
  });
  hooks.afterEach?.(() => receiver.assertClean());
  afterAll(async () => {
    await receiver?.close();
    await switchboard?.stop();
  });
  return {
    get switchboard() {
      return switchboard ?? notStarted('Switchboard');
    },
    get receiver() {
      return receiver ?? notStarted('Receiver');
    },
    /** Resolves once both are started: node:test runs top-level `before` hooks side by side. */
    ready,
  };
}

function notStarted(what) {
  throw new Error(`the ${what} is not started yet: use it inside a test, or in a hook after \`await kit.ready\` `
    + '(node:test starts top-level before hooks together).');
}
