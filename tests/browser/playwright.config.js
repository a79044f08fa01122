// Playwright settings for minigemma's browser test: JupyterLab on localhost, Debian's Chromium.
// No browser is downloaded (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 at install; never `playwright install`).
const path = require('path');
const base = require('@jupyterlab/galata/lib/playwright-config');

const port = process.env.MINIGEMMA_LAB_PORT || '8899';
const python = process.env.MINIGEMMA_PYTHON || path.resolve(__dirname, '../../.venv/bin/python');

module.exports = {
  ...base,
  reporter: [['list']],
  outputDir: path.resolve(__dirname, '../../artifacts/playwright'),
  timeout: 180000,
  workers: 1,
  retries: 0,
  use: {
    ...base.use,
    baseURL: `http://127.0.0.1:${port}`,
    browserName: 'chromium',
    viewport: { width: 1400, height: 1000 },
    video: 'off',
    trace: 'off',
    launchOptions: {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
             '--disable-component-update', '--disable-sync']
    }
  },
  webServer: {
    command: `"${python}" -m jupyterlab --config jupyter_server_test_config.py`,
    cwd: __dirname,
    url: `http://127.0.0.1:${port}/lab`,
    timeout: 120000,
    reuseExistingServer: false,
    stdout: 'ignore',
    stderr: 'pipe'
  }
};
