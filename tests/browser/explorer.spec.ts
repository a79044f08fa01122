// The attention explorer in a real browser: run notebook 11 in JupyterLab, check the widgets
// render, move the layer slider with the keyboard, and check the kernel redrew the heatmap.
import { expect, test } from '@jupyterlab/galata';
import * as fs from 'fs';
import * as path from 'path';

const NOTEBOOK = '11_attention_explorer.ipynb';
const ROOT = path.resolve(__dirname, '../..');

test('attention explorer renders and follows the keyboard', async ({ page, tmpPath }) => {
  // A copy in galata's temporary server folder: the repository's notebook is never touched.
  await page.contents.uploadFile(path.join(ROOT, 'notebooks', NOTEBOOK), `${tmpPath}/${NOTEBOOK}`);
  await page.notebook.openByPath(`${tmpPath}/${NOTEBOOK}`);
  await page.notebook.activate(NOTEBOOK);
  await page.notebook.run(); // Run All Cells, then wait until every cell has executed

  const explorer = page.locator('.minigemma-attention-explorer').first();
  await explorer.scrollIntoViewIfNeeded();
  await expect(explorer).toBeVisible();
  const layer = explorer.locator('.widget-slider').first();
  const heatmap = explorer.locator('.widget-output img').first();
  await expect(layer).toBeVisible();
  await expect(heatmap).toBeVisible();
  await expect(page.getByText('Error displaying widget')).toHaveCount(0);

  const grid = explorer.locator('.widget-output img').nth(1);
  const before = await heatmap.getAttribute('src');
  const gridBefore = await grid.getAttribute('src');
  const readout = layer.locator('.widget-readout');
  const start = Number(await readout.textContent());
  await layer.locator('.noUi-handle').focus();
  await page.keyboard.press('ArrowRight');
  await expect(readout).toHaveText(String(start + 1));
  // The new PNG comes from the Python callback in the kernel: a changed image proves the round trip.
  await expect.poll(async () => heatmap.getAttribute('src'), { timeout: 60000 }).not.toBe(before);
  // The grid's outline follows the selected head: it is redrawn too.
  await expect.poll(async () => grid.getAttribute('src'), { timeout: 60000 }).not.toBe(gridBefore);
  await page.locator('#jp-main-statusbar >> text=Idle').waitFor();
  await expect(page.getByText('Error displaying widget')).toHaveCount(0);

  fs.mkdirSync(path.join(ROOT, 'artifacts'), { recursive: true });
  await explorer.scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(ROOT, 'artifacts', 'attention_explorer.png') });
  await explorer.screenshot({ path: path.join(ROOT, 'artifacts', 'attention_explorer_widget.png') });
});
