// Opens a private app the way a user does: the edge sends the browser to the console, the user
// signs in, and the browser comes back to the app page through the one-time-code callback. A
// second visit goes straight in on the app's own cookie.
//
// usage: node app_login.mjs <app_url> <email> <password> <expected_text> [screenshot.png]
import { chromium } from 'playwright-core';

const [appUrl, email, password, expected, shot] = process.argv.slice(2);
if (!appUrl || !email || !password || !expected) {
  console.error('usage: node app_login.mjs <app_url> <email> <password> <expected_text> [screenshot]');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(appUrl);
  // Not signed in: the console's sign-in page, on the base domain.
  await page.waitForURL(/\/login\?next=%2Fapp-auth/, { timeout: 15000 });
  await page.fill('#email', email);
  await page.fill('#password', password);
  await page.click('button[type=submit]');
  // Back on the app host, on the page first asked for.
  await page.waitForURL(appUrl, { timeout: 15000 });
  const text = await page.textContent('body');
  if (!text.includes(expected)) throw new Error(`app page shows ${JSON.stringify(text)}`);
  if (shot) await page.screenshot({ path: shot });
  const cookies = await context.cookies(appUrl);
  const app = cookies.find((c) => c.name === 'rigbox_app_session');
  if (!app || !app.httpOnly || app.sameSite !== 'Lax') throw new Error(`app cookie: ${JSON.stringify(app)}`);
  // A second visit needs no sign-in.
  const again = await context.newPage();
  const r = await again.goto(appUrl);
  if (r.status() !== 200 || !(await again.textContent('body')).includes(expected)) {
    throw new Error(`second visit: ${r.status()}`);
  }
  console.log(`ok: ${page.url()}`);
} finally {
  await browser.close();
}
