// Approves a `rig login` device-login request the way a user does: open the verification URL in
// a real browser, get sent to the console's sign-in page, sign in, check the code shown matches
// the CLI's, and click Approve (or Deny).
//
// usage: node device_login.mjs <verification_url> <email> <password> <user_code> <approve|deny> [screenshot.png]
import { chromium } from 'playwright-core';

const [url, email, password, userCode, decision, shot] = process.argv.slice(2);
if (!url || !email || !password || !userCode || !['approve', 'deny'].includes(decision)) {
  console.error('usage: node device_login.mjs <url> <email> <password> <user_code> <approve|deny> [screenshot]');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  await page.goto(url);
  // Not signed in yet: the console sends us to its sign-in page, then back.
  await page.waitForURL(/\/login\?next=/, { timeout: 10000 });
  await page.fill('#email', email);
  await page.fill('#password', password);
  await page.click('button[type=submit]');
  await page.waitForURL(/\/cli-login\?code=/, { timeout: 10000 });
  const shown = (await page.textContent('#user-code')).trim();
  if (shown !== userCode) throw new Error(`page shows code ${shown}, CLI printed ${userCode}`);
  await page.click(`#${decision}`);
  const expected = decision === 'approve' ? 'Approved' : 'Denied';
  await page.waitForFunction((t) => document.getElementById('msg').textContent.startsWith(t), expected, { timeout: 10000 });
  if (shot) await page.screenshot({ path: shot });
  console.log(`ok: ${decision}d ${shown}`);
} finally {
  await browser.close();
}
