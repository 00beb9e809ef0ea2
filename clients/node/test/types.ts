// Checked by `tsc -p .` (run-tests.sh): index.d.ts describes what a TypeScript test writes.
import {
  devSetup, isInjected, NotificationTokenValidator, Receiver, Switchboard, SwitchboardError, useSwitchboard,
  type ApiFault, type Delivery, type FaultRules, type NotificationFault, type ReceivedNotification, type ResultInfo,
} from 'switchboard-testkit';

declare const hook: (fn: () => unknown) => void;

export async function usage(): Promise<void> {
  const switchboard: Switchboard = await Switchboard.connect({ bin: '/usr/local/bin/switchboard' });
  const receiver = await Receiver.start({
    switchboard,
    onNotification: async (notification: ReceivedNotification) => {
      if (notification.kind === 'call') await switchboard.graph('GET', `/communications/calls/${notification.callId}`);
    },
  });
  const { status, body } = await switchboard.graph('POST', '/communications/calls', { callbackUri: receiver.url });
  const callId: string = body.id;
  const clock: Date = await switchboard.advance(1);
  await switchboard.advance(0, { settle: false });
  const now: Date = await switchboard.clockNow();
  const ended: string[] = await switchboard.hangUp(devSetup.parties.alice);
  const heard: string[] = await switchboard.press(devSetup.parties.alice, '1#');
  const incoming: string = await switchboard.dial(devSetup.parties.bob, { callbackUri: receiver.url });
  const reason: ResultInfo = await switchboard.failCall(callId, { code: 410, subcode: 301005 });
  const live = await switchboard.calls({ state: 'established' });
  const log: Delivery[] = await switchboard.deliveries(callId);
  const again = await switchboard.redeliver(callId, log[0].sequence);
  const throttle: ApiFault = { route: 'calls', fault: 'throttle', times: 1, retry_after_secs: 2 };
  const late: NotificationFault = { call_id: callId, fault: 'delay', delay_ms: 1000 };
  const rules: FaultRules = await switchboard.setFaults({ seed: 42, api: [throttle], notifications: [late] });
  const retryAfter: number | null = (await switchboard.faults()).api[0].retry_after_secs;
  await switchboard.setFaults();
  await switchboard.clearFaults();
  const injected: boolean = isInjected(log[0].attempts[0]);
  // @ts-expect-error: a fault the server does not have
  await switchboard.setFaults({ api: [{ fault: 'explode' }] });
  const meeting = await switchboard.meeting(devSetup.meeting.joinMeetingId);
  const party = await switchboard.party(devSetup.parties.bob);
  const token: string = await switchboard.token();
  receiver.failNext(1, { status: 503 });
  const done: ReceivedNotification = await receiver.waitFor(callId, { operation: 'menu', timeout: 1000 });
  const states: string[] = receiver.states(callId);
  const keys: string = receiver.tones(callId);
  const anyCall = await receiver.waitFor(null, { state: 'incoming' });
  const subcode: number | undefined = anyCall.resultInfo?.subcode;
  const prompt: string = receiver.prompt('menu', 3);
  receiver.assertClean();
  receiver.clear();
  await receiver.close();
  await switchboard.reset();
  await switchboard.stop();
  const claims = await new NotificationTokenValidator({ metadataUrl: switchboard.url, audience: switchboard.appId })
    .validate('Bearer x');
  const kit = useSwitchboard({ beforeAll: hook, beforeEach: hook, afterAll: hook }, { config: 'switchboard.toml', forwardTo: 'http://127.0.0.1:3978/api/calls' });
  await kit.ready;
  kit.receiver.forwardTo = undefined;
  const attached: Switchboard = Switchboard.fromEnv({ SWITCHBOARD_URL: 'http://127.0.0.1:8080' });
  try {
    await attached.press(devSetup.parties.erin, '1');
  } catch (error) {
    if (error instanceof SwitchboardError) console.log(error.status, error.code);
  }
  // @ts-expect-error: waitFor takes a call id
  await receiver.waitFor({ state: 'established' });
  console.log(status, clock, now, ended, heard, incoming, reason, live[0]?.state, again.status, meeting.active,
    party.calls, token, done.status, states, keys, subcode, prompt, claims, kit.receiver.url, devSetup.parties.frontDesk,
    rules.seed, retryAfter, injected);
}
